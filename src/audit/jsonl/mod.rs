//! [`JsonLinesSink`]: a hash-chained JSON-lines file, and its verifier.
//!
//! The format is described in the [module documentation](super#the-chain-format):
//! [`format`] makes and checks one line, [`writer`] appends lines to a file,
//! [`background`] does it on a thread of its own, fed by a [`queue`], [`verify`] checks a
//! whole chain.

mod background;
mod checkpoint;
mod format;
mod queue;
#[cfg(test)]
mod testing;
mod verify;
mod writer;

pub use self::background::{
    Background, BackgroundSink, Durability, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, WhenFull,
};
pub use self::checkpoint::{
    CHECKPOINT_ACTION, CheckpointKey, CheckpointKeyError, MIN_CHECKPOINT_KEY_LEN,
};
pub use self::format::MAX_LINE_LEN;
pub use self::verify::{
    ChainError, ChainErrorKind, ChainSummary, verify_chain, verify_chain_signed, verify_file,
    verify_file_signed,
};
pub use self::writer::JsonLinesSink;
