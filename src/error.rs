//! Errors that every layer may raise and that main.rs maps to exit codes. Module
//! errors stay in their modules (one thiserror enum each); this holds only what crosses
//! layers by kind, so that no lower module has to import the CLI layer to raise it.

/// Bad usage that is not a clap parse error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
