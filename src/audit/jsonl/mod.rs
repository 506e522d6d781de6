//! [`JsonLinesSink`]: a hash-chained JSON-lines file, and its verifier.
//!
//! The format is described in the [module documentation](super#the-chain-format):
//! [`format`] makes and checks one line, [`writer`] appends lines to a file, [`verify`]
//! checks a whole chain.

mod format;
#[cfg(test)]
mod testing;
mod verify;
mod writer;

pub use self::format::MAX_LINE_LEN;
pub use self::verify::{ChainError, ChainErrorKind, ChainSummary, verify_chain, verify_file};
pub use self::writer::JsonLinesSink;
