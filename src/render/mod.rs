//! Results as people and files see them: numbers and changes as text
//! ([`display`]), the report as one HTML page ([`html`]), and result files
//! written whole or not at all ([`output`]).

pub mod display;
pub mod html;
pub mod output;
