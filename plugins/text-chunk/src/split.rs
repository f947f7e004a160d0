//! Where a document is cut. The `text-splitter` crate picks the chunks (the
//! largest run of paragraphs, then sentences, words, graphemes or characters
//! that fits); this module sets it up (size unit, overlap, no trimming, so
//! that chunks cover every byte) and caps the number of chunks.

use std::ops::Range;

use text_splitter::{Characters, ChunkConfig, ChunkSizer, TextSplitter};

/// What a chunk's size counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (`max_chars`).
    Chars,
    /// UTF-8 bytes (`max_bytes`).
    Bytes,
}

/// Smallest `max_bytes`: a character is up to 4 bytes of UTF-8 and is never
/// cut, so a smaller size could not hold every chunk.
pub const MAX_BYTES_MIN: u64 = 4;

/// Sizes a chunk by its UTF-8 length.
#[derive(Debug, Clone, Copy)]
struct Utf8Bytes;

impl ChunkSizer for Utf8Bytes {
    fn size(&self, chunk: &str) -> usize {
        chunk.len()
    }
}

#[derive(Debug)]
enum Splitter {
    Chars(TextSplitter<Characters>),
    Bytes(TextSplitter<Utf8Bytes>),
}

/// A configured splitter.
#[derive(Debug)]
pub struct Chunker {
    splitter: Splitter,
}

impl Chunker {
    /// Chunks of at most `size` units, each repeating up to `overlap` units of
    /// the end of the previous one. Errors are messages for a config error.
    pub fn new(size: u64, overlap: u64, unit: Unit) -> Result<Self, String> {
        let key = match unit {
            Unit::Chars => "max_chars",
            Unit::Bytes => "max_bytes",
        };
        if size == 0 {
            return Err(format!("`{key}` must be at least 1"));
        }
        if unit == Unit::Bytes && size < MAX_BYTES_MIN {
            return Err(format!(
                "`max_bytes` must be at least {MAX_BYTES_MIN}: a character can take 4 bytes and is never cut"
            ));
        }
        if overlap >= size {
            return Err(format!("`overlap` ({overlap}) must be smaller than `{key}` ({size})"));
        }
        let size = usize::try_from(size).map_err(|_| format!("`{key}` is too large"))?;
        let overlap = usize::try_from(overlap).map_err(|_| "`overlap` is too large".to_string())?;
        let config = ChunkConfig::new(size).with_trim(false).with_overlap(overlap).map_err(|e| e.to_string())?;
        let splitter = match unit {
            Unit::Chars => Splitter::Chars(TextSplitter::new(config)),
            Unit::Bytes => Splitter::Bytes(TextSplitter::new(config.with_sizer(Utf8Bytes))),
        };
        Ok(Self { splitter })
    }

    /// The byte ranges of `text`'s chunks, in order; none for an empty text.
    /// Fails with `max_chunks` when there would be more than that many.
    pub fn split(&self, text: &str, max_chunks: usize) -> Result<Vec<Range<usize>>, usize> {
        match &self.splitter {
            Splitter::Chars(s) => collect(s.chunk_indices(text), max_chunks),
            Splitter::Bytes(s) => collect(s.chunk_indices(text), max_chunks),
        }
    }
}

fn collect<'t>(chunks: impl Iterator<Item = (usize, &'t str)>, max_chunks: usize) -> Result<Vec<Range<usize>>, usize> {
    let mut ranges = Vec::new();
    for (offset, chunk) in chunks {
        if ranges.len() == max_chunks {
            return Err(max_chunks);
        }
        ranges.push(offset..offset + chunk.len());
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks what the operator promises about `ranges` for `text`.
    #[track_caller]
    fn check(text: &str, ranges: &[Range<usize>], size: usize, overlap: usize, unit: Unit) {
        let measure = |r: &Range<usize>| match unit {
            Unit::Chars => text[r.clone()].chars().count(),
            Unit::Bytes => r.len(),
        };
        if text.is_empty() {
            assert!(ranges.is_empty());
            return;
        }
        assert_eq!(ranges.first().map(|r| r.start), Some(0), "the first chunk starts the document");
        assert_eq!(ranges.last().map(|r| r.end), Some(text.len()), "the last chunk ends it");
        for r in ranges {
            assert!(r.start < r.end, "empty chunk {r:?}");
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end), "{r:?} cuts a character");
            assert!(measure(r) <= size, "chunk {r:?} has {} > {size}: {:?}", measure(r), &text[r.clone()]);
        }
        for w in ranges.windows(2) {
            assert!(w[1].start <= w[0].end, "gap between {:?} and {:?}", w[0], w[1]);
            assert!(w[1].start > w[0].start && w[1].end > w[0].end, "no progress: {:?} then {:?}", w[0], w[1]);
            let shared = w[1].start..w[0].end;
            assert!(measure(&shared) <= overlap, "overlap {shared:?} is more than {overlap}");
        }
    }

    fn split(text: &str, size: u64, overlap: u64, unit: Unit) -> Vec<Range<usize>> {
        let ranges = Chunker::new(size, overlap, unit).unwrap().split(text, usize::MAX).unwrap();
        check(text, &ranges, size as usize, overlap as usize, unit);
        ranges
    }

    const DOC: &str = "Flumen moves data.\n\nIt splits documents into chunks. Each chunk fits the size.\n\n\
                       Paragraphs come first, then sentences, then words.";

    #[test]
    fn paragraphs_are_kept_whole_when_they_fit() {
        let ranges = split(DOC, 60, 0, Unit::Chars);
        let chunks: Vec<&str> = ranges.iter().map(|r| &DOC[r.clone()]).collect();
        assert_eq!(chunks.concat(), DOC, "without overlap the chunks are the document");
        assert_eq!(chunks[0], "Flumen moves data.\n\n");
        assert!(chunks[1].starts_with("It splits documents into chunks."), "{chunks:?}");
    }

    #[test]
    fn sentences_then_words_when_a_paragraph_is_too_long() {
        let ranges = split(DOC, 35, 0, Unit::Chars);
        let chunks: Vec<&str> = ranges.iter().map(|r| &DOC[r.clone()]).collect();
        assert!(chunks.contains(&"It splits documents into chunks. "), "{chunks:?}");
        let ranges = split(DOC, 12, 0, Unit::Chars);
        for r in &ranges {
            let c = &DOC[r.clone()];
            let first = c.chars().next().unwrap();
            let after = DOC[..r.start].chars().last();
            assert!(
                after.is_none_or(|a| !a.is_alphanumeric()) || !first.is_alphanumeric(),
                "a word was cut at {r:?}: {c:?}"
            );
        }
    }

    #[test]
    fn overlap_repeats_the_end_of_the_previous_chunk() {
        let ranges = split(DOC, 40, 15, Unit::Chars);
        assert!(ranges.windows(2).any(|w| w[1].start < w[0].end), "some chunks overlap: {ranges:?}");
    }

    #[test]
    fn overlap_is_whole_units_of_the_level_the_chunks_are_cut_at() {
        // Chunks of whole sentences, each longer than the overlap: none repeats.
        let sentences = "One sentence that is long enough. Another sentence, just as long. ".repeat(3);
        let ranges = split(&sentences, 40, 10, Unit::Chars);
        assert!(ranges.windows(2).all(|w| w[1].start == w[0].end), "{ranges:?}");
        // Chunks cut between words repeat whole words.
        let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho";
        let ranges = split(words, 25, 12, Unit::Chars);
        assert!(ranges.windows(2).any(|w| w[1].start < w[0].end), "{ranges:?}");
        for r in &ranges[1..] {
            let at_boundary = words[..r.start].ends_with(' ') || words[r.start..].starts_with(' ');
            assert!(at_boundary, "an overlap starts inside a word: {:?}", &words[r.clone()]);
        }
    }

    #[test]
    fn bytes_count_utf8_and_never_cut_a_character() {
        let text = "Grüße aus Köln! 日本語のテキストです。Ελληνικά κείμενα. 🦀🦀🦀🦀";
        for size in [4, 5, 7, 16, 33] {
            split(text, size, 0, Unit::Bytes);
            split(text, size, size / 2, Unit::Bytes);
        }
        for size in [1, 2, 5, 9] {
            split(text, size, 0, Unit::Chars);
            split(text, size, size - 1, Unit::Chars);
        }
    }

    #[test]
    fn random_documents_are_covered_within_the_limits() {
        let alphabet: Vec<&str> = vec!["a", "b", "é", " ", " ", "\n", "\n\n", ". ", "日", "🦀", "e\u{301}", "\r\n"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let len = (next() % 200) as usize;
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let unit = if next() % 2 == 0 { Unit::Chars } else { Unit::Bytes };
            let size = 4 + next() % 30;
            let overlap = next() % size;
            split(&text, size, overlap, unit);
        }
    }

    #[test]
    fn empty_text_gives_no_chunks() {
        assert!(split("", 10, 0, Unit::Chars).is_empty());
    }

    #[test]
    fn the_chunk_cap_is_an_error() {
        let c = Chunker::new(5, 0, Unit::Chars).unwrap();
        assert_eq!(c.split("aaaa bbbb cccc", 2), Err(2));
        assert_eq!(c.split("aaaa bbbb cccc", 3).map(|r| r.len()), Ok(3));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Chunker::new(0, 0, Unit::Chars).unwrap_err().contains("`max_chars` must be at least 1"));
        assert!(Chunker::new(3, 0, Unit::Bytes).unwrap_err().contains("at least 4"));
        assert!(
            Chunker::new(10, 10, Unit::Bytes)
                .unwrap_err()
                .contains("`overlap` (10) must be smaller than `max_bytes` (10)")
        );
    }
}
