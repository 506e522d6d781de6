//! Moved to [`crate::require`]: [`RequireScope`] is `Require<Scope>`.

// TODO(issue-14): remove after merge
pub use crate::require::{RequireScope, Scope};

/// The service made by [`RequireScope`].
// TODO(issue-14): remove after merge
pub type RequireScopeService<S, R> = crate::require::RequireService<S, Scope, R>;
