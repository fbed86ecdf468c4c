//! Results as people and files see them: numbers and changes as text
//! ([`display`]), the report as one HTML page ([`html`]) with each metric's
//! definition ([`definitions`]), and result files written whole or not at
//! all ([`output`]).

pub mod definitions;
pub mod display;
pub mod html;
pub mod output;
