//! Where bytes come from and go to, below the tables: object stores
//! ([`storage`]), temporary files and the process's interrupt state
//! ([`scratch`]), and the rule that a command never writes where it reads
//! ([`readonly`]).

pub mod readonly;
pub mod scratch;
pub mod storage;
