//! Authentication primitives: password hashing on a bounded pool, and tokens.

pub mod fair;
pub mod hasher;
pub mod token;

pub use hasher::{HashPool, Verified};
pub use token::{Token, TokenHash};
