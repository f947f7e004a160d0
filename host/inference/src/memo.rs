//! The inference memo: a model's outputs remembered per input row, keyed by
//! (model digest, row digest), so a replay after a failure or a `--resume`
//! pays nothing for rows already inferred. Entries are appended to a log file
//! beside the job's checkpoints as soon as the backend answers (a killed
//! process loses none: they are in the page cache; `sync` makes them survive
//! a machine crash and runs at every checkpoint). The index lives in memory;
//! outputs stay in memory up to a budget and are read back from the log past
//! it. A torn or damaged tail (a kill mid-append) is cut off when the log is
//! opened.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flumen_types::inference::{DType, Tensor};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The log's first bytes: format and version.
const MAGIC: &[u8; 8] = b"FLMEMO01";
/// Most bytes one entry may have (a damaged length is not trusted past this).
const ENTRY_BYTES_MAX: usize = 256 << 20;

/// One row's outputs: per output, its dtype, row shape and bytes.
pub type RowOutputs = Vec<(DType, Vec<usize>, Bytes)>;

/// Counters for the run summary.
#[derive(Debug, Default)]
pub struct MemoStats {
    /// Entries found in the log when it was opened.
    pub loaded: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Bytes of a damaged tail cut off when the log was opened.
    pub cut_bytes: AtomicU64,
}

struct Inner {
    file: Option<File>,
    len: u64,
    /// Row digest → where its entry starts and its length.
    index: HashMap<u128, (u64, u32)>,
    /// Decoded outputs kept in memory, oldest first, within `budget` bytes.
    cached: HashMap<u128, RowOutputs>,
    order: VecDeque<u128>,
    cached_bytes: usize,
}

/// A model's memo.
pub struct Memo {
    path: Option<PathBuf>,
    model_digest: String,
    budget: usize,
    inner: Mutex<Inner>,
    pub stats: MemoStats,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").field("path", &self.path).finish_non_exhaustive()
    }
}

fn dtype_code(d: DType) -> u8 {
    DType::ALL.iter().position(|x| *x == d).unwrap_or(0) as u8
}

impl Memo {
    /// A memo kept in memory only (no checkpoint directory).
    pub fn in_memory(model_digest: &str, budget: usize) -> Memo {
        Memo {
            path: None,
            model_digest: model_digest.to_owned(),
            budget,
            inner: Mutex::new(Inner {
                file: None,
                len: 0,
                index: HashMap::new(),
                cached: HashMap::new(),
                order: VecDeque::new(),
                cached_bytes: 0,
            }),
            stats: MemoStats::default(),
        }
    }

    /// Opens (or makes) the log at `path`, indexing its entries and cutting
    /// off a damaged tail.
    pub fn open(path: &Path, model_digest: &str, budget: usize) -> std::io::Result<Memo> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let memo = Memo::in_memory(model_digest, budget);
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut inner = memo.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut at;
        if data.is_empty() {
            file.write_all(MAGIC)?;
            at = MAGIC.len();
        } else if data.len() >= MAGIC.len() && &data[..MAGIC.len()] == MAGIC {
            at = MAGIC.len();
            // Entry: len u32 | checksum u64 (of what follows) | key u128 | payload.
            while let Some(head) = data.get(at..at + 12) {
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let sum =
                    u64::from_le_bytes([head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11]]);
                if !(16..=ENTRY_BYTES_MAX).contains(&len) {
                    break;
                }
                let Some(body) = data.get(at + 12..at + 12 + len) else { break };
                if xxh3_64(body) != sum {
                    break;
                }
                let mut k = [0u8; 16];
                k.copy_from_slice(&body[..16]);
                inner.index.insert(u128::from_le_bytes(k), (at as u64, len as u32 + 12));
                at += 12 + len;
            }
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not an inference memo (no {:?} header)", path.display(), "FLMEMO01"),
            ));
        }
        if at < data.len() {
            memo.stats.cut_bytes.store((data.len() - at) as u64, Ordering::Relaxed);
            tracing::warn!(memo = %path.display(), bytes = data.len() - at, "cut a damaged memo tail");
            file.set_len(at as u64)?;
        }
        memo.stats.loaded.store(inner.index.len() as u64, Ordering::Relaxed);
        inner.len = at as u64;
        inner.file = Some(file);
        drop(inner);
        Ok(Memo { path: Some(path.to_owned()), ..memo })
    }

    /// The key of row `row` of `inputs`.
    pub fn key(&self, inputs: &[Tensor], row: usize) -> u128 {
        let mut h = Xxh3::new();
        h.update(self.model_digest.as_bytes());
        for t in inputs {
            h.update(&[dtype_code(t.dtype)]);
            for d in &t.shape[1..] {
                h.update(&(*d as u64).to_le_bytes());
            }
            let rb = t.row_bytes();
            h.update(&t.data[row * rb..(row + 1) * rb]);
        }
        h.digest128()
    }

    /// The outputs remembered for `key`.
    pub fn get(&self, key: u128) -> Option<RowOutputs> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = inner.cached.get(&key) {
            return Some(r.clone());
        }
        let (offset, len) = *inner.index.get(&key)?;
        let file = inner.file.as_ref()?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        let row = decode(buf.get(12 + 16..)?)?;
        Self::keep(&mut inner, self.budget, key, row.clone());
        Some(row)
    }

    /// Remembers `row` for `key` (appending it to the log, if any).
    /// Each key's remembered outputs, and the positions of the keys not
    /// remembered; counted as hits and misses.
    pub fn lookup(&self, keys: &[u128]) -> (Vec<Option<RowOutputs>>, Vec<usize>) {
        let found: Vec<Option<RowOutputs>> = keys.iter().map(|k| self.get(*k)).collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|r| found[*r].is_none()).collect();
        self.stats.hits.fetch_add((keys.len() - missing.len()) as u64, Ordering::Relaxed);
        self.stats.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
        (found, missing)
    }

    pub fn put(&self, key: u128, row: RowOutputs) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.index.contains_key(&key) || inner.cached.contains_key(&key) {
            return;
        }
        if inner.file.is_some() {
            let mut body = key.to_le_bytes().to_vec();
            encode(&row, &mut body);
            let mut entry = Vec::with_capacity(body.len() + 12);
            entry.extend_from_slice(&(body.len() as u32).to_le_bytes());
            entry.extend_from_slice(&xxh3_64(&body).to_le_bytes());
            entry.extend_from_slice(&body);
            let at = inner.len;
            let written = inner.file.as_mut().map(|f| f.write_all(&entry));
            match written {
                Some(Ok(())) => {
                    inner.len += entry.len() as u64;
                    inner.index.insert(key, (at, entry.len() as u32));
                }
                Some(Err(e)) => tracing::warn!(memo = ?self.path, "cannot append to the memo: {e}"),
                None => {}
            }
        }
        Self::keep(&mut inner, self.budget, key, row);
    }

    fn keep(inner: &mut Inner, budget: usize, key: u128, row: RowOutputs) {
        let size: usize = row.iter().map(|(_, s, b)| b.len() + s.len() * 8 + 16).sum();
        if size > budget {
            return;
        }
        while inner.cached_bytes + size > budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(r) = inner.cached.remove(&old) {
                inner.cached_bytes -= r.iter().map(|(_, s, b)| b.len() + s.len() * 8 + 16).sum::<usize>();
            }
            // An in-memory memo forgets what it evicts; a logged one reads it back.
            if inner.file.is_none() {
                inner.index.remove(&old);
            }
        }
        inner.cached_bytes += size;
        inner.cached.insert(key, row);
        inner.order.push_back(key);
    }

    /// Makes every appended entry durable (at checkpoints and at the end).
    pub fn sync(&self) -> std::io::Result<()> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &inner.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn encode(row: &RowOutputs, out: &mut Vec<u8>) {
    out.push(row.len() as u8);
    for (dtype, shape, data) in row {
        out.push(dtype_code(*dtype));
        out.push(shape.len() as u8);
        for d in shape {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    }
}

fn decode(mut b: &[u8]) -> Option<RowOutputs> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn u64_of(b: &mut &[u8]) -> Option<u64> {
        let s = take(b, 8)?;
        Some(u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
    }
    let n = *take(&mut b, 1)?.first()?;
    let mut row = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let dtype = *DType::ALL.get(*take(&mut b, 1)?.first()? as usize)?;
        let ndim = *take(&mut b, 1)?.first()? as usize;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(usize::try_from(u64_of(&mut b)?).ok()?);
        }
        let len = usize::try_from(u64_of(&mut b)?).ok()?;
        let want = shape.iter().try_fold(dtype.size(), |a, d| a.checked_mul(*d))?;
        if len != want {
            return None;
        }
        row.push((dtype, shape, Bytes::copy_from_slice(take(&mut b, len)?)));
    }
    Some(row)
}

/// Row `row` of each output, as a memo entry.
pub fn row_of(outputs: &[Tensor], row: usize) -> RowOutputs {
    outputs
        .iter()
        .map(|t| {
            let one = t.slice_rows(row, 1);
            (t.dtype, t.shape[1..].to_vec(), one.data)
        })
        .collect()
}

/// Rows back into one tensor per output, in order.
pub fn assemble(rows: &[RowOutputs]) -> Result<Vec<Tensor>, String> {
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    (0..first.len())
        .map(|i| {
            let (dtype, shape, _) = &first[i];
            let mut data = Vec::with_capacity(rows.len() * first[i].2.len());
            for r in rows {
                let (d, s, b) = r.get(i).ok_or("a remembered row has fewer outputs")?;
                if d != dtype || s != shape {
                    return Err(format!("output {i}: rows of different shapes ({shape:?}, {s:?})"));
                }
                data.extend_from_slice(b);
            }
            let mut full = vec![rows.len()];
            full.extend_from_slice(shape);
            Tensor::new(*dtype, full, Bytes::from(data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("m.memo");
        let x = Tensor::from_f32(vec![3, 2], &[1., 2., 3., 4., 5., 6.]).expect("x");
        let y = Tensor::from_f32(vec![3, 1], &[10., 20., 30.]).expect("y");
        {
            let memo = Memo::open(&path, "abc", 1 << 20).expect("open");
            for r in 0..3 {
                memo.put(memo.key(std::slice::from_ref(&x), r), row_of(std::slice::from_ref(&y), r));
            }
            memo.sync().expect("sync");
        }
        // A kill in the middle of an append leaves half an entry.
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).expect("torn");
        drop(f);
        let memo = Memo::open(&path, "abc", 0).expect("reopen");
        assert_eq!(memo.stats.loaded.load(Ordering::Relaxed), 3);
        assert_eq!(memo.stats.cut_bytes.load(Ordering::Relaxed), 7);
        let rows: Vec<RowOutputs> =
            (0..3).map(|r| memo.get(memo.key(std::slice::from_ref(&x), r)).expect("remembered")).collect();
        assert_eq!(assemble(&rows).expect("assemble"), vec![y]);
        // Another model's digest gives other keys.
        let other = Memo::in_memory("def", 1 << 20);
        assert_ne!(other.key(std::slice::from_ref(&x), 0), memo.key(std::slice::from_ref(&x), 0));
        assert!(Memo::open(&dir.path().join("junk"), "abc", 0).is_ok());
        std::fs::write(dir.path().join("bad"), b"not a memo at all").expect("write");
        assert!(Memo::open(&dir.path().join("bad"), "abc", 0).is_err());
    }
}
