//! Entry points for the fuzz targets (`fuzz/`): the parsers of what recovery reads from disk,
//! reachable without the fjall or object-store halves of the crate. Not a stable API.

use std::io::Cursor;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checkpoint::{self, Manifest};
use crate::format::SnapshotReader;
use crate::{STATE_KEY_BYTES_MAX, StateError};

/// Checks and parses `bytes` as the manifest file of `region`'s checkpoint `checkpoint`, as
/// recovery does.
pub fn parse_manifest(bytes: &[u8], region: &str, checkpoint: u64) -> Result<Manifest, String> {
    checkpoint::parse_manifest(bytes, region, checkpoint)
}

/// A manifest file around `content` (any text) with its correct checksum, so that a fuzzer
/// reaches the parsing of the content past the checksum.
pub fn manifest_file(content: &str) -> Vec<u8> {
    let sha256 = hex::encode(Sha256::digest(content.as_bytes()));
    format!("{{\"sha256\":\"{sha256}\",\"manifest\":{content}}}").into_bytes()
}

/// Decodes `bytes` as a snapshot file, as a restore does: (full, checkpoint, records).
pub fn read_snapshot(bytes: &[u8]) -> Result<(bool, u64, u64), StateError> {
    let (mut reader, header) = SnapshotReader::new(Cursor::new(bytes), Path::new("fuzz"), STATE_KEY_BYTES_MAX)?;
    let mut records = 0;
    while reader.next_record()?.is_some() {
        records += 1;
    }
    Ok((header.full, header.checkpoint, records))
}
