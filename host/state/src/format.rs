//! The snapshot file format: a versioned header, length-prefixed records and a counting trailer.
//!
//! ```text
//! file    = header record* trailer
//! header  = "FLUMENST" · version: u16 · kind: u8 (0 delta, 1 full) · checkpoint: u64
//! record  = 0x01 · key_len: u32 · key · value_len: u32 · value     a put
//!         | 0x02 · key_len: u32 · key                              a tombstone (deltas only)
//! trailer = 0xFF · records: u64                                    then end of file
//! ```
//!
//! Integers are little-endian. Keys are the subtask's fjall keys without the subtask prefix, so a
//! file restores into any subtask. A delta holds the final value (or a tombstone) of each key
//! changed since the previous snapshot, in key order; a full file holds every entry.
//!
//! Files are checksummed by their manifest and verified before they are decoded; still, decoding
//! trusts nothing: every length is checked against its limit, buffers grow only with bytes
//! actually read, and a missing trailer, a wrong record count or trailing bytes are errors.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::{STATE_VALUE_BYTES_MAX, StateError};

const MAGIC: &[u8; 8] = b"FLUMENST";
const VERSION: u16 = 1;
const KIND_DELTA: u8 = 0;
const KIND_FULL: u8 = 1;
const TAG_PUT: u8 = 0x01;
const TAG_TOMBSTONE: u8 = 0x02;
const TAG_END: u8 = 0xFF;

/// What a snapshot file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) full: bool,
    pub(crate) checkpoint: u64,
}

/// One decoded record; its key and value are in the reader's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Put,
    Tombstone,
}

/// Encodes a snapshot file onto `out`.
pub(crate) struct SnapshotWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn new(mut out: W, header: Header) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&[if header.full { KIND_FULL } else { KIND_DELTA }])?;
        out.write_all(&header.checkpoint.to_le_bytes())?;
        Ok(Self { out, records: 0 })
    }

    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.out.write_all(&[TAG_PUT])?;
        write_bytes(&mut self.out, key)?;
        write_bytes(&mut self.out, value)?;
        self.records += 1;
        Ok(())
    }

    pub(crate) fn tombstone(&mut self, key: &[u8]) -> io::Result<()> {
        self.out.write_all(&[TAG_TOMBSTONE])?;
        write_bytes(&mut self.out, key)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and hands the output back.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&self.records.to_le_bytes())?;
        Ok(self.out)
    }
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("record field longer than 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Decodes a snapshot file from `input`; every error is [`StateError::Corrupt`] or
/// [`StateError::Io`] naming `path`.
pub(crate) struct SnapshotReader<R: Read> {
    input: R,
    path: PathBuf,
    key_bytes_max: usize,
    records: u64,
    done: bool,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header. Keys longer than `key_bytes_max` are refused.
    pub(crate) fn new(input: R, path: &Path, key_bytes_max: usize) -> Result<(Self, Header), StateError> {
        let mut reader = Self {
            input,
            path: path.to_owned(),
            key_bytes_max,
            records: 0,
            done: false,
            key: Vec::new(),
            value: Vec::new(),
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic, "header")?;
        if &magic != MAGIC {
            return Err(reader.corrupt("not a flumen state snapshot (bad magic)".to_owned()));
        }
        let version = u16::from_le_bytes(reader.array("header")?);
        if version != VERSION {
            return Err(reader.corrupt(format!("unsupported snapshot version {version} (this build reads {VERSION})")));
        }
        let [kind] = reader.array("header")?;
        let full = match kind {
            KIND_DELTA => false,
            KIND_FULL => true,
            other => return Err(reader.corrupt(format!("unknown snapshot kind {other}"))),
        };
        let checkpoint = u64::from_le_bytes(reader.array("header")?);
        Ok((reader, Header { full, checkpoint }))
    }

    /// The next record (its key in `self.key`, a put's value in `self.value`), or `None` after a
    /// valid trailer followed by the end of the file.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, StateError> {
        if self.done {
            return Ok(None);
        }
        let [tag] = self.array("record tag")?;
        let record = match tag {
            TAG_PUT => Record::Put,
            TAG_TOMBSTONE => Record::Tombstone,
            TAG_END => {
                let count = u64::from_le_bytes(self.array("trailer")?);
                if count != self.records {
                    return Err(self.corrupt(format!("trailer counts {count} records, file holds {}", self.records)));
                }
                let mut extra = [0u8; 1];
                if self.read_some(&mut extra)? != 0 {
                    return Err(self.corrupt("bytes after the trailer".to_owned()));
                }
                self.done = true;
                return Ok(None);
            }
            other => return Err(self.corrupt(format!("unknown record tag {other:#04x} at record {}", self.records))),
        };
        let mut key = std::mem::take(&mut self.key);
        let read = self.read_field(&mut key, self.key_bytes_max, "key");
        self.key = key;
        read?;
        if record == Record::Put {
            let mut value = std::mem::take(&mut self.value);
            let read = self.read_field(&mut value, STATE_VALUE_BYTES_MAX, "value");
            self.value = value;
            read?;
        }
        self.records += 1;
        Ok(Some(record))
    }

    fn read_field(&mut self, buf: &mut Vec<u8>, max: usize, what: &str) -> Result<(), StateError> {
        let len = u32::from_le_bytes(self.array(what)?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(self.corrupt(format!("{what} of {len} bytes at record {} (at most {max})", self.records)));
        }
        buf.clear();
        // `take` makes the buffer grow only with bytes actually present.
        let got = (&mut self.input).take(len as u64).read_to_end(buf).map_err(|e| self.io(&e))?;
        if got != len {
            return Err(self.truncated(what));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StateError> {
        let mut bytes = [0u8; N];
        self.read_exact(&mut bytes, what)?;
        Ok(bytes)
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), StateError> {
        match self.input.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated(what)),
            Err(e) => Err(self.io(&e)),
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, StateError> {
        loop {
            match self.input.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(&e)),
            }
        }
    }

    fn truncated(&self, what: &str) -> StateError {
        self.corrupt(format!("truncated: the file ends inside a {what} (after {} records)", self.records))
    }

    fn corrupt(&self, message: String) -> StateError {
        StateError::Corrupt { path: self.path.clone(), message }
    }

    fn io(&self, e: &io::Error) -> StateError {
        StateError::Io { path: self.path.clone(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(header: Header, records: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), header).unwrap();
        for (k, v) in records {
            match v {
                Some(v) => w.put(k, v).unwrap(),
                None => w.tombstone(k).unwrap(),
            }
        }
        w.finish().unwrap()
    }

    type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn decode(bytes: &[u8]) -> Result<(Header, Records), StateError> {
        let (mut r, header) = SnapshotReader::new(bytes, Path::new("snap"), 1024)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            let value = (rec == Record::Put).then(|| r.value.clone());
            out.push((r.key.clone(), value));
        }
        Ok((header, out))
    }

    #[test]
    fn round_trip() {
        let header = Header { full: false, checkpoint: 42 };
        let bytes = encode(header, &[(b"a", Some(b"1")), (b"b", None), (b"", Some(b""))]);
        let (h, records) = decode(&bytes).unwrap();
        assert_eq!(h, header);
        assert_eq!(
            records,
            vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None), (Vec::new(), Some(Vec::new()))]
        );
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_an_error_or_decodes_without_panicking() {
        let bytes = encode(Header { full: true, checkpoint: 7 }, &[(b"key", Some(b"value")), (b"k2", None)]);
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "truncated to {len}: {err}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // Flips inside keys/values decode (the checksum catches those); nothing panics.
            let _ = decode(&flipped);
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).unwrap_err().to_string().contains("after the trailer"));
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        let mut bytes = encode(Header { full: true, checkpoint: 1 }, &[]);
        bytes.truncate(bytes.len() - 9); // drop the trailer
        bytes.push(TAG_PUT);
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend_from_slice(b"keyk");
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("value of 4294967295 bytes"), "{err}");

        let mut bytes = encode(Header { full: true, checkpoint: 1 }, &[]);
        bytes.truncate(bytes.len() - 9);
        bytes.push(TAG_PUT);
        bytes.extend_from_slice(&2000u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("key of 2000 bytes"), "{err}");
    }
}
