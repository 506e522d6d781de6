//! [`AuditError`]: why an audit sink could not be set up or a chain could not be verified.

use std::io;

use super::{ChainError, ChainErrorKind};

/// Why an audit sink could not be set up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened, read or written.
    #[error("audit file i/o failed")]
    Io(#[from] io::Error),
    /// The existing file's last line is not a whole, valid chained record, so the chain
    /// cannot be continued. Run [`verify_file`](super::verify_file) to find where it breaks.
    #[error("cannot continue the audit chain: its last line is invalid ({kind})")]
    BrokenTail {
        /// What is wrong with the last line.
        kind: ChainErrorKind,
    },
    /// Another sink (in this process or another) has the file open: two writers would
    /// break the chain.
    #[error(
        "audit log {} is in use by another process (or another sink in this one): give each \
         writer its own file",
        path.display()
    )]
    Locked {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The checkpoint key could not be read.
    #[error(transparent)]
    CheckpointKey(#[from] super::CheckpointKeyError),
    /// [`verify_file`](super::verify_file) found the chain broken.
    #[error(transparent)]
    Chain(#[from] ChainError),
}
