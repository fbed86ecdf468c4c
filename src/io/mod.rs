//! Where bytes come from and go to, below the tables: object stores
//! ([`storage`]), temporary files and the process's interrupt state
//! ([`scratch`]), the rule that a command never writes where it reads
//! ([`readonly`]), and the word to the allocator that memory was let go
//! ([`allocator`]).

pub mod allocator;
pub mod readonly;
pub mod scratch;
pub mod storage;
