//! Moved to [`crate::require`]: [`RequireWorkspace`] is `Require<Workspace>`.

// TODO(issue-14): remove after merge
pub use crate::require::{RequireWorkspace, Workspace, WorkspaceSource};

/// The service made by [`RequireWorkspace`].
// TODO(issue-14): remove after merge
pub type RequireWorkspaceService<S, R> = crate::require::RequireService<S, Workspace, R>;
