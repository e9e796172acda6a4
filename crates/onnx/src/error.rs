//! What can go wrong with a model, each error naming the model file and the fix. Its
//! own module, so both engines and the loader use it without using each other.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("model {}: cannot read it ({source}); reinstall Obscura or set the models directory", path.display())]
    Missing { path: PathBuf, source: std::io::Error },
    #[error("model {}: SHA-256 is {actual}, expected {expected}; the file is altered or corrupt, reinstall it", path.display())]
    Altered { path: PathBuf, expected: String, actual: String },
    #[error("model {file}: not in the manifest of shipped models")]
    Unknown { file: String },
    #[error("model {}: cannot read it ({source}); check the path", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error(
        "model {}: SHA-256 is {actual}, but {expected} is configured; restore the file, or configure the new sum if it was replaced on purpose",
        path.display()
    )]
    Mismatch { path: PathBuf, expected: String, actual: String },
    /// The outputs do not read as the configured convention and classes.
    #[error("model {file}: {message}")]
    Layout { file: String, message: String },
    #[error("model {file}: {message}")]
    Tract { file: String, message: String },
}
