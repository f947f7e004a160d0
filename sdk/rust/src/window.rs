//! Event-time windows kept in host state: tumbling, sliding and session
//! windows per key, an `i64` aggregate per window, and a timer per window end
//! that fires when the watermark passes it.
//!
//! ```text
//! use flumen_sdk::window::{self, Assigner, WindowAgg, WindowState};
//!
//! // open:
//! let windows = WindowState::new("clicks", Assigner::Tumbling { size_ms: 60_000 }, WindowAgg::Count)?;
//! // process: one call per batch
//! let keys = state::keys_of(batch.column(self.key).as_ref())?;
//! let times = window::times_ms(batch.column(self.time).as_ref())?;
//! let rows = keys.iter().zip(&times).filter_map(|(k, t)| Some((k, (*t)?, 1)));
//! self.windows.add(rows)?;
//! // on_watermark:
//! for fired in self.windows.fire(watermark)? { /* emit (key, start, end, value) */ }
//! ```
//!
//! Everything lives in the host's keyed state (the job grants `state`), so a
//! checkpoint covers open windows, their timers and the watermark, and a
//! resumed job fires exactly what an uninterrupted one would. With a state
//! called `name`, the layout is:
//!
//! | state | key | field | value |
//! |---|---|---|---|
//! | `name/windows` (map) | the row's key | window start, window end | the aggregate (i64 LE) |
//! | `name/timers` (map) | operator-wide (empty) | window end, then the row's key | empty |
//! | `name/watermark` (value) | operator-wide | | the last watermark fired (i64 LE) |
//! | `name/late` (value) | operator-wide | | late rows dropped so far (u64 LE) |
//!
//! Times in fields are big-endian with the sign bit flipped, so fields sort by
//! time. Timers are plain state written by this module, not a host service: a
//! window's end is registered when the window is created and removed when it
//! fires or merges away. An instance reads the timers from state once (on its
//! first call) and keeps an index of them in memory, so [`WindowState::fire`]
//! touches only the windows that are due.
//!
//! Semantics:
//! - A window is `[start, end)`. Tumbling windows of `size_ms` start at
//!   multiples of `size_ms` (from the epoch); sliding windows of `size_ms`
//!   start every `slide_ms` (a row belongs to up to `size_ms / slide_ms`
//!   windows, at most [`WINDOWS_PER_ROW_MAX`]; with `slide_ms > size_ms` rows
//!   between windows belong to none); a session window of a key starts at a
//!   row `[t, t + gap_ms)` and merges with every window of the key it overlaps
//!   or touches, so a session ends once its key has been silent for `gap_ms`.
//! - [`WindowState::fire`] with watermark `w` returns, and removes, every
//!   window with `end <= w`. A watermark that does not advance fires nothing.
//! - A row whose time is earlier than the last watermark is **late**: it is
//!   dropped whole (for sliding windows too, even if some of its windows are
//!   still open, so a row is never counted in part) and counted in
//!   `name/late` ([`WindowState::late_rows`]). A row at exactly the watermark
//!   is on time.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrowPrimitiveType};
use arrow_schema::{DataType, Field, TimeUnit};

use crate::Error;
use crate::state::{MapEntry, MapState, ValueState};

/// Most windows one row may belong to (`size_ms / slide_ms` of a sliding
/// assigner, rounded up): a row costs work and state in proportion to its
/// windows, so a configuration that would make every row touch millions of
/// windows is refused at [`Assigner::check`].
pub const WINDOWS_PER_ROW_MAX: i64 = 1024;

/// Longest `name` of a [`WindowState`], leaving room for the suffixes within
/// the host's 256-byte limit on state names.
pub const WINDOW_STATE_NAME_BYTES_MAX: usize = 240;

/// Which windows a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigner {
    /// Windows `[k·size, (k+1)·size)`: each row belongs to exactly one.
    Tumbling { size_ms: i64 },
    /// Windows `[k·slide, k·slide + size)`.
    Sliding { size_ms: i64, slide_ms: i64 },
    /// Per key, rows closer than `gap_ms` apart share a window.
    Session { gap_ms: i64 },
}

impl Assigner {
    /// Checks the sizes (positive, at most [`WINDOWS_PER_ROW_MAX`] windows
    /// per row) as a config error: call it at `open`.
    pub fn check(&self) -> Result<(), Error> {
        let positive = |name: &str, v: i64| {
            if v > 0 { Ok(()) } else { Err(Error::config(format!("window `{name}` must be at least 1, not {v}"))) }
        };
        match *self {
            Assigner::Tumbling { size_ms } => positive("size_ms", size_ms),
            Assigner::Session { gap_ms } => positive("gap_ms", gap_ms),
            Assigner::Sliding { size_ms, slide_ms } => {
                positive("size_ms", size_ms)?;
                positive("slide_ms", slide_ms)?;
                // Both positive here: the number of windows rounded up.
                let per_row = (size_ms - 1) / slide_ms + 1;
                if per_row > WINDOWS_PER_ROW_MAX {
                    return Err(Error::config(format!(
                        "sliding windows of size_ms {size_ms} every slide_ms {slide_ms} put each row in {per_row} \
                         windows, over the limit of {WINDOWS_PER_ROW_MAX}"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The windows a row at `time` starts in, oldest first: its tumbling or
    /// sliding windows, or its own session window `[time, time + gap)`
    /// (before any merge). An end past `i64::MAX` is an input error.
    pub fn windows(&self, time: i64) -> Result<Vec<Window>, Error> {
        let overflow = || Error::input(format!("event time {time} ms: its window would end past the largest int64"));
        let (size, slide) = match *self {
            Assigner::Session { gap_ms } => {
                let end = time.checked_add(gap_ms).ok_or_else(overflow)?;
                return Ok(vec![Window { start: time, end }]);
            }
            Assigner::Tumbling { size_ms } => (size_ms, size_ms),
            Assigner::Sliding { size_ms, slide_ms } => (size_ms, slide_ms),
        };
        if size <= 0 || slide <= 0 {
            return Err(Error::config("window sizes must be positive; call `Assigner::check` at open"));
        }
        // The last window starting at or before `time`, then earlier ones while they still hold it.
        let mut start = time.checked_sub(time.rem_euclid(slide)).ok_or_else(overflow)?;
        let mut windows = Vec::new();
        loop {
            let end = start.checked_add(size).ok_or_else(overflow)?;
            if end <= time || windows.len() as i64 >= WINDOWS_PER_ROW_MAX {
                break;
            }
            windows.push(Window { start, end });
            match start.checked_sub(slide) {
                Some(earlier) => start = earlier,
                None => break,
            }
        }
        windows.reverse();
        Ok(windows)
    }
}

/// A window `[start, end)` in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// How the values of a window's rows combine into its `i64` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAgg {
    /// The number of rows (their values are ignored).
    Count,
    /// The sum of the values; overflowing int64 is an input error.
    Sum,
    Min,
    Max,
}

impl WindowAgg {
    /// The value of a window holding one row of `value`.
    pub fn first(self, value: i64) -> i64 {
        match self {
            WindowAgg::Count => 1,
            WindowAgg::Sum | WindowAgg::Min | WindowAgg::Max => value,
        }
    }

    /// `acc` with one more row of `value`.
    pub fn add(self, acc: i64, value: i64) -> Result<i64, Error> {
        self.merge(acc, self.first(value))
    }

    /// The value of two windows merged (sessions).
    pub fn merge(self, a: i64, b: i64) -> Result<i64, Error> {
        match self {
            WindowAgg::Count | WindowAgg::Sum => {
                a.checked_add(b).ok_or_else(|| Error::input(format!("window aggregate {a} + {b} overflows int64")))
            }
            WindowAgg::Min => Ok(a.min(b)),
            WindowAgg::Max => Ok(a.max(b)),
        }
    }
}

/// A window that fired: `key` as given to [`WindowState::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub key: Vec<u8>,
    pub start: i64,
    pub end: i64,
    pub value: i64,
}

/// Keyed windows with their timers, all in host state; see the module docs.
#[derive(Debug)]
pub struct WindowState {
    assigner: Assigner,
    agg: WindowAgg,
    states: States,
    /// What this instance read from state on its first call, kept in step with every write.
    cache: Option<Cache>,
}

#[derive(Debug)]
struct States {
    windows: MapState,
    timers: MapState,
    watermark: ValueState,
    late: ValueState,
}

#[derive(Debug)]
struct Cache {
    watermark: Option<i64>,
    late: u64,
    /// Window end → the keys with a window ending then.
    timers: BTreeMap<i64, BTreeSet<Vec<u8>>>,
}

/// The operator-wide key.
const WIDE: &[u8] = &[];

impl WindowState {
    /// Windows kept under the state name `name` (at most
    /// [`WINDOW_STATE_NAME_BYTES_MAX`] bytes; see the module docs for the
    /// states it uses). Checks `assigner`.
    pub fn new(name: &str, assigner: Assigner, agg: WindowAgg) -> Result<Self, Error> {
        assigner.check()?;
        if name.is_empty() || name.len() > WINDOW_STATE_NAME_BYTES_MAX {
            return Err(Error::config(format!(
                "a window state name must have 1 to {WINDOW_STATE_NAME_BYTES_MAX} bytes, `{name}` has {}",
                name.len()
            )));
        }
        Ok(Self {
            assigner,
            agg,
            states: States {
                windows: MapState::new(format!("{name}/windows")),
                timers: MapState::new(format!("{name}/timers")),
                watermark: ValueState::new(format!("{name}/watermark")),
                late: ValueState::new(format!("{name}/late")),
            },
            cache: None,
        })
    }

    pub fn assigner(&self) -> Assigner {
        self.assigner
    }

    /// Adds rows `(key, event time in ms, value)` into every window each
    /// belongs to, merging session windows and registering new windows'
    /// timers. Give it a whole batch at once: it reads and writes each key's
    /// windows once. Returns how many rows were late (and dropped).
    pub fn add<K: AsRef<[u8]>>(&mut self, rows: impl IntoIterator<Item = (K, i64, i64)>) -> Result<u64, Error> {
        let cache = load(&mut self.cache, &self.states)?;
        let mut late = 0;
        let mut by_key: BTreeMap<Vec<u8>, Vec<(i64, i64)>> = BTreeMap::new();
        for (key, time, value) in rows {
            if cache.watermark.is_some_and(|w| time < w) {
                late += 1;
                continue;
            }
            by_key.entry(key.as_ref().to_vec()).or_default().push((time, value));
        }
        // One state call per kind of change for the whole batch, not per key.
        let keys: Vec<&Vec<u8>> = by_key.keys().collect();
        let stored = self.states.windows.entries_many(&keys)?;
        let mut puts: Vec<(Vec<u8>, [u8; 16], [u8; 8])> = Vec::new();
        let mut removes: Vec<(Vec<u8>, [u8; 16])> = Vec::new();
        let mut timers_removed: Vec<(&[u8], Vec<u8>)> = Vec::new();
        let mut timers_added: Vec<(&[u8], Vec<u8>, [u8; 0])> = Vec::new();
        for ((key, rows), entries) in by_key.iter().zip(stored) {
            let before = parse_windows(&self.states.windows, entries)?;
            let mut after = before.clone();
            apply(self.assigner, self.agg, &mut after, rows)?;
            for (window, value) in &after {
                if before.get(window) != Some(value) {
                    puts.push((key.clone(), window_field(window), value.to_le_bytes()));
                }
            }
            for window in before.keys().filter(|w| !after.contains_key(w)) {
                removes.push((key.clone(), window_field(window)));
            }
            let ends_before: BTreeSet<i64> = before.keys().map(|w| w.end).collect();
            let ends_after: BTreeSet<i64> = after.keys().map(|w| w.end).collect();
            for &end in ends_before.difference(&ends_after) {
                timers_removed.push((WIDE, timer_field(end, key)));
                if let Some(keys) = cache.timers.get_mut(&end) {
                    keys.remove(key);
                    if keys.is_empty() {
                        cache.timers.remove(&end);
                    }
                }
            }
            for &end in ends_after.difference(&ends_before) {
                timers_added.push((WIDE, timer_field(end, key), []));
                cache.timers.entry(end).or_default().insert(key.clone());
            }
        }
        // Puts and removals name disjoint fields, so their order does not matter.
        self.states.windows.remove_many(&removes)?;
        self.states.windows.put_many(&puts)?;
        self.states.timers.remove_many(&timers_removed)?;
        self.states.timers.put_many(&timers_added)?;
        if late > 0 {
            cache.late = cache.late.saturating_add(late);
            self.states.late.set_u64(WIDE, cache.late)?;
        }
        Ok(late)
    }

    /// The watermark reached `watermark`: returns every window with
    /// `end <= watermark`, ordered by end, key and start, and removes them
    /// and their timers from state. A watermark at or below the last one
    /// fires nothing (after a restore, sources may repeat earlier ones).
    pub fn fire(&mut self, watermark: i64) -> Result<Vec<Fired>, Error> {
        let cache = load(&mut self.cache, &self.states)?;
        if cache.watermark.is_some_and(|w| watermark <= w) {
            return Ok(Vec::new());
        }
        cache.watermark = Some(watermark);
        self.states.watermark.set_i64(WIDE, watermark)?;
        let due: Vec<i64> = cache.timers.range(..=watermark).map(|(end, _)| *end).collect();
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut timers_removed: Vec<(&[u8], Vec<u8>)> = Vec::new();
        for end in due {
            for key in cache.timers.remove(&end).unwrap_or_default() {
                timers_removed.push((WIDE, timer_field(end, &key)));
                keys.insert(key);
            }
        }
        self.states.timers.remove_many(&timers_removed)?;
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        let stored = self.states.windows.entries_many(&keys)?;
        let mut fired = Vec::new();
        let mut removes: Vec<(&[u8], [u8; 16])> = Vec::new();
        for (key, entries) in keys.iter().zip(stored) {
            for (window, value) in parse_windows(&self.states.windows, entries)? {
                if window.end <= watermark {
                    removes.push((key, window_field(&window)));
                    fired.push(Fired { key: key.clone(), start: window.start, end: window.end, value });
                }
            }
        }
        self.states.windows.remove_many(&removes)?;
        fired.sort_by(|a, b| (a.end, &a.key, a.start).cmp(&(b.end, &b.key, b.start)));
        Ok(fired)
    }

    /// The last watermark [`fire`](Self::fire) was given, if any.
    pub fn watermark(&mut self) -> Result<Option<i64>, Error> {
        Ok(load(&mut self.cache, &self.states)?.watermark)
    }

    /// Late rows dropped so far (kept in state: it survives restarts).
    pub fn late_rows(&mut self) -> Result<u64, Error> {
        Ok(load(&mut self.cache, &self.states)?.late)
    }
}

/// Whether [`times_ms`] accepts a column of `field`'s type, as a config error
/// naming the column if not: call it at `open`.
pub fn check_time_field(field: &Field) -> Result<(), Error> {
    match field.data_type() {
        DataType::Int64 | DataType::Timestamp(..) => Ok(()),
        other => Err(Error::config(format!(
            "column `{}` has type {other}, which cannot be an event time; use a timestamp or an int64 of \
             milliseconds since the epoch",
            field.name()
        ))),
    }
}

/// The event time of every row of `array` in milliseconds since the epoch:
/// int64 is taken as milliseconds, timestamps of any unit are converted
/// (rounding down); nulls stay `None`. A second-resolution time past the
/// int64 range of milliseconds is an input error.
pub fn times_ms(array: &dyn Array) -> Result<Vec<Option<i64>>, Error> {
    fn each<T: ArrowPrimitiveType<Native = i64>>(
        array: &dyn Array,
        convert: impl Fn(i64) -> Option<i64>,
    ) -> Result<Vec<Option<i64>>, Error> {
        let a = array
            .as_primitive_opt::<T>()
            .ok_or_else(|| Error::internal(format!("column of type {} is not the array it says", array.data_type())))?;
        a.iter()
            .map(|v| match v {
                None => Ok(None),
                Some(v) => convert(v)
                    .map(Some)
                    .ok_or_else(|| Error::input(format!("event time {v} is out of the int64 range of milliseconds"))),
            })
            .collect()
    }
    match array.data_type() {
        DataType::Int64 => each::<Int64Type>(array, Some),
        DataType::Timestamp(TimeUnit::Millisecond, _) => each::<TimestampMillisecondType>(array, Some),
        DataType::Timestamp(TimeUnit::Second, _) => each::<TimestampSecondType>(array, |v| v.checked_mul(1000)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            each::<TimestampMicrosecondType>(array, |v| Some(v.div_euclid(1000)))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            each::<TimestampNanosecondType>(array, |v| Some(v.div_euclid(1_000_000)))
        }
        other => Err(Error::input(format!(
            "a column of type {other} cannot be an event time; use a timestamp or an int64 of milliseconds"
        ))),
    }
}

/// Reads the timers and counters from state, once per instance.
fn load<'a>(cache: &'a mut Option<Cache>, states: &States) -> Result<&'a mut Cache, Error> {
    if let Some(cache) = cache {
        return Ok(cache);
    }
    let mut timers: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (field, _) in states.timers.entries(WIDE)? {
        let (end, key) = field.split_first_chunk::<8>().ok_or_else(|| malformed(&states.timers, field.len()))?;
        timers.entry(from_sortable(*end)).or_default().insert(key.to_vec());
    }
    let watermark = states.watermark.get_i64(WIDE)?;
    let late = states.late.get_u64(WIDE)?.unwrap_or(0);
    Ok(cache.insert(Cache { watermark, late, timers }))
}

/// The windows of one key with their values, from its stored `entries`.
fn parse_windows(windows: &MapState, entries: Vec<MapEntry>) -> Result<BTreeMap<Window, i64>, Error> {
    entries
        .into_iter()
        .map(|(field, value)| {
            let (start, end) = field
                .split_first_chunk::<8>()
                .and_then(|(start, rest)| Some((*start, <[u8; 8]>::try_from(rest).ok()?)))
                .ok_or_else(|| malformed(windows, field.len()))?;
            let value: [u8; 8] = value.as_slice().try_into().map_err(|_| malformed(windows, value.len()))?;
            Ok((Window { start: from_sortable(start), end: from_sortable(end) }, i64::from_le_bytes(value)))
        })
        .collect()
}

/// Adds `rows` (time, value) of one key to its `windows`.
fn apply(
    assigner: Assigner,
    agg: WindowAgg,
    windows: &mut BTreeMap<Window, i64>,
    rows: &[(i64, i64)],
) -> Result<(), Error> {
    for &(time, value) in rows {
        match assigner {
            Assigner::Tumbling { .. } | Assigner::Sliding { .. } => {
                for window in assigner.windows(time)? {
                    match windows.get_mut(&window) {
                        Some(acc) => *acc = agg.add(*acc, value)?,
                        None => {
                            windows.insert(window, agg.first(value));
                        }
                    }
                }
            }
            Assigner::Session { .. } => {
                let mut merged =
                    assigner.windows(time)?.into_iter().next().ok_or_else(|| {
                        Error::internal(format!("event time {time}: a session assigner gave no window"))
                    })?;
                let mut acc = agg.first(value);
                let overlapping: Vec<Window> =
                    windows.keys().filter(|w| w.start <= merged.end && w.end >= merged.start).copied().collect();
                for window in overlapping {
                    if let Some(v) = windows.remove(&window) {
                        acc = agg.merge(acc, v)?;
                    }
                    merged = Window { start: merged.start.min(window.start), end: merged.end.max(window.end) };
                }
                windows.insert(merged, acc);
            }
        }
    }
    Ok(())
}

fn malformed(state: &MapState, len: usize) -> Error {
    Error::internal(format!("window state `{}`: a stored entry of {len} bytes is malformed", state.name()))
}

fn window_field(window: &Window) -> [u8; 16] {
    let mut field = [0; 16];
    field[..8].copy_from_slice(&sortable(window.start));
    field[8..].copy_from_slice(&sortable(window.end));
    field
}

fn timer_field(end: i64, key: &[u8]) -> Vec<u8> {
    let mut field = Vec::with_capacity(8 + key.len());
    field.extend_from_slice(&sortable(end));
    field.extend_from_slice(key);
    field
}

/// Big-endian with the sign bit flipped: byte order is numeric order.
fn sortable(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_sortable(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampNanosecondArray, TimestampSecondArray};

    use super::*;

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn tumbling_windows_hold_each_row_once() {
        let a = Assigner::Tumbling { size_ms: 100 };
        assert_eq!(a.windows(0).unwrap(), [w(0, 100)]);
        assert_eq!(a.windows(99).unwrap(), [w(0, 100)]);
        assert_eq!(a.windows(100).unwrap(), [w(100, 200)]);
        assert_eq!(a.windows(-1).unwrap(), [w(-100, 0)], "negative times round down");
    }

    #[test]
    fn sliding_windows_hold_each_row_size_over_slide_times() {
        let a = Assigner::Sliding { size_ms: 100, slide_ms: 50 };
        assert_eq!(a.windows(120).unwrap(), [w(50, 150), w(100, 200)]);
        assert_eq!(a.windows(100).unwrap(), [w(50, 150), w(100, 200)]);
        assert_eq!(a.windows(99).unwrap(), [w(0, 100), w(50, 150)]);
        let gaps = Assigner::Sliding { size_ms: 10, slide_ms: 50 };
        assert_eq!(gaps.windows(5).unwrap(), [w(0, 10)]);
        assert_eq!(gaps.windows(20).unwrap(), [], "between windows");
        let thirds = Assigner::Sliding { size_ms: 100, slide_ms: 30 };
        assert_eq!(thirds.windows(95).unwrap(), [w(0, 100), w(30, 130), w(60, 160), w(90, 190)]);
    }

    #[test]
    fn bad_sizes_and_overflows_are_errors_not_panics() {
        assert!(Assigner::Tumbling { size_ms: 0 }.check().is_err());
        assert!(Assigner::Session { gap_ms: -1 }.check().is_err());
        assert!(Assigner::Sliding { size_ms: 10, slide_ms: 0 }.check().is_err());
        let e = Assigner::Sliding { size_ms: 1_000_000, slide_ms: 1 }.check().unwrap_err();
        assert!(e.message.contains("1000000 windows"), "{e}");
        assert!(Assigner::Sliding { size_ms: 1024, slide_ms: 1 }.check().is_ok());
        assert!(Assigner::Tumbling { size_ms: 10 }.windows(i64::MAX).is_err());
        assert!(Assigner::Session { gap_ms: 10 }.windows(i64::MAX - 5).is_err());
        assert!(Assigner::Tumbling { size_ms: 10 }.windows(i64::MIN).is_err(), "its window starts before i64::MIN");
        assert_eq!(Assigner::Tumbling { size_ms: 8 }.windows(i64::MIN).unwrap(), [w(i64::MIN, i64::MIN + 8)]);
    }

    #[test]
    fn sessions_merge_overlapping_and_touching_windows() {
        let a = Assigner::Session { gap_ms: 10 };
        let mut windows = BTreeMap::new();
        apply(a, WindowAgg::Count, &mut windows, &[(0, 0), (5, 0), (30, 0)]).unwrap();
        assert_eq!(windows, BTreeMap::from([(w(0, 15), 2), (w(30, 40), 1)]));
        // [15, 25) touches [0, 15); then [22, 32) overlaps both windows and bridges them.
        apply(a, WindowAgg::Count, &mut windows, &[(15, 0)]).unwrap();
        assert_eq!(windows, BTreeMap::from([(w(0, 25), 3), (w(30, 40), 1)]));
        apply(a, WindowAgg::Count, &mut windows, &[(22, 0)]).unwrap();
        assert_eq!(windows, BTreeMap::from([(w(0, 40), 5)]));
    }

    #[test]
    fn aggregates_combine_and_merge() {
        let mut windows = BTreeMap::new();
        let rows = [(1, 5), (2, -3), (3, 9)];
        for (agg, expected) in [(WindowAgg::Count, 3), (WindowAgg::Sum, 11), (WindowAgg::Min, -3), (WindowAgg::Max, 9)]
        {
            windows.clear();
            apply(Assigner::Tumbling { size_ms: 10 }, agg, &mut windows, &rows).unwrap();
            assert_eq!(windows, BTreeMap::from([(w(0, 10), expected)]), "{agg:?}");
        }
        assert_eq!(WindowAgg::Sum.merge(4, 5).unwrap(), 9);
        assert_eq!(WindowAgg::Max.merge(4, 5).unwrap(), 5);
        assert!(WindowAgg::Sum.add(i64::MAX, 1).unwrap_err().message.contains("overflows"));
    }

    #[test]
    fn times_convert_to_milliseconds() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None]));
        assert_eq!(times_ms(ints.as_ref()).unwrap(), [Some(5), None]);
        let secs: ArrayRef = Arc::new(TimestampSecondArray::from(vec![2]));
        assert_eq!(times_ms(secs.as_ref()).unwrap(), [Some(2000)]);
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![-1, 3_999_999]));
        assert_eq!(times_ms(nanos.as_ref()).unwrap(), [Some(-1), Some(3)]);
        let huge: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX]));
        assert!(times_ms(huge.as_ref()).is_err());
        let text: ArrayRef = Arc::new(StringArray::from(vec!["1"]));
        assert!(times_ms(text.as_ref()).is_err());
        assert!(check_time_field(&Field::new("t", DataType::Utf8, false)).is_err());
        assert!(check_time_field(&Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true)).is_ok());
    }

    #[test]
    fn sortable_times_order_like_their_values() {
        let values = [i64::MIN, -1, 0, 1, i64::MAX];
        let bytes: Vec<[u8; 8]> = values.iter().map(|v| sortable(*v)).collect();
        assert!(bytes.windows(2).all(|p| p[0] < p[1]));
        assert!(values.iter().all(|v| from_sortable(sortable(*v)) == *v));
        assert!(window_field(&w(-5, 5)) < window_field(&w(0, 1)));
    }
}
