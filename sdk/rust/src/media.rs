//! Typed access to Flumen's multimodal columns: encoded images and videos
//! (blob references), decoded images and tensors (Arrow's canonical tensor
//! extension types), audio and embeddings.
//!
//! The type definitions are shared with the host (`flumen_batch::media`), so
//! both ends agree on names, storage and metadata by construction.

pub use flumen_batch::media::*;
