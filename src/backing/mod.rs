//! The backing directory's IO, below the daemon and the tools: the syscall wrappers
//! (nothing here follows a symlink), making nodes owned by a caller, a file's plaintext
//! through its sealed blocks, and the error type whose errno the daemon replies.

pub mod content;
pub mod error;
pub mod nodes;
pub mod sys;
