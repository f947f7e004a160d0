//! The console and blackhole sinks, and the field checks of every sink kind.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::{ConnectorError, SinkKind, SinkReport, SinkSpec, SinkWriter, Transaction};

/// Rows the console sink prints when `max_rows` is not set.
const DEFAULT_MAX_ROWS: usize = 20;

/// Checks that a sink sets the fields its kind needs and no others.
pub(super) fn validate(spec: &SinkSpec) -> Result<(), ConnectorError> {
    let kind = kind_name(spec.kind);
    let reject = |field: &str| Err(config(spec, format!("`{field}` does not apply to a {kind} sink")));
    if spec.parallelism == Some(0) {
        return Err(config(spec, "`parallelism` must be at least 1"));
    }
    match spec.kind {
        SinkKind::Parquet | SinkKind::Csv | SinkKind::Jsonl => {
            match spec.path.as_deref() {
                None => {
                    return Err(config(
                        spec,
                        format!("a {kind} sink needs `path` (the output file, or directory when parallelism > 1)"),
                    ));
                }
                Some(path) if path.trim().is_empty() => return Err(config(spec, "`path` is empty")),
                Some(_) => {}
            }
            if spec.max_rows.is_some() {
                return reject("max_rows");
            }
        }
        SinkKind::Console | SinkKind::Blackhole => {
            if spec.path.is_some() {
                return reject("path");
            }
            if spec.kind == SinkKind::Blackhole && spec.max_rows.is_some() {
                return reject("max_rows");
            }
        }
    }
    if spec.kind != SinkKind::Csv && spec.has_header.is_some() {
        return reject("has_header");
    }
    Ok(())
}

pub(super) fn kind_name(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::Parquet => "parquet",
        SinkKind::Csv => "csv",
        SinkKind::Jsonl => "jsonl",
        SinkKind::Console => "console",
        SinkKind::Blackhole => "blackhole",
    }
}

fn config(spec: &SinkSpec, message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config { node: spec.id.clone(), message: message.into() }
}

/// Prints the first `max_rows` rows to stdout as a table when committed.
pub(super) fn console(spec: &SinkSpec, schema: SchemaRef) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    console_to(spec, schema, Box::new(std::io::stdout()), false)
}

/// For checkpointed runs: prints each batch's rows (up to `max_rows` in all) as
/// they arrive, since a checkpointed run may never call `commit`. Rows replayed
/// after a recovery are printed again: console output is at-least-once.
pub(super) fn console_streaming(spec: &SinkSpec, schema: SchemaRef) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    console_to(spec, schema, Box::new(std::io::stdout()), true)
}

fn console_to(
    spec: &SinkSpec,
    schema: SchemaRef,
    out: Box<dyn Write + Send>,
    streaming: bool,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    validate(spec)?;
    Ok(Box::new(ConsoleSink {
        node: spec.id.clone(),
        schema,
        max_rows: spec.max_rows.unwrap_or(DEFAULT_MAX_ROWS),
        streaming,
        kept: Vec::new(),
        kept_rows: 0,
        rows: 0,
        out,
    }))
}

struct ConsoleSink {
    node: String,
    schema: SchemaRef,
    max_rows: usize,
    /// Print at each write (checkpointed runs) rather than all at commit.
    streaming: bool,
    kept: Vec<RecordBatch>,
    kept_rows: usize,
    rows: u64,
    out: Box<dyn Write + Send>,
}

impl ConsoleSink {
    fn error(&self, message: String) -> ConnectorError {
        ConnectorError::Other { node: self.node.clone(), message }
    }

    /// Writes `text` in one call, so that the output of parallel subtasks does not interleave.
    fn print(&mut self, text: &str) -> Result<(), ConnectorError> {
        let written = self.out.write_all(text.as_bytes()).and_then(|()| self.out.flush());
        match written {
            // A closed pipe (e.g. `| head`) is the reader's choice, not a failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(self.error(format!("cannot print to stdout: {e}")))
            }
            _ => Ok(()),
        }
    }

    fn table(&self, batches: &[RecordBatch]) -> Result<String, ConnectorError> {
        arrow::util::pretty::pretty_format_batches(batches)
            .map(|table| format!("{table}\n"))
            .map_err(|e| self.error(format!("cannot format the rows: {e}")))
    }

    /// `… N more rows` when rows were counted but not printed.
    fn hidden_rows_line(&self) -> String {
        let hidden = self.rows - self.kept_rows as u64;
        if hidden > 0 { format!("… {hidden} more rows\n") } else { String::new() }
    }
}

impl SinkWriter for ConsoleSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        self.rows += batch.num_rows() as u64;
        let take = batch.num_rows().min(self.max_rows - self.kept_rows);
        if take > 0 {
            self.kept_rows += take;
            if self.streaming {
                let text = self.table(&[batch.slice(0, take)])?;
                self.print(&text)?;
            } else {
                self.kept.push(batch.slice(0, take));
            }
        }
        Ok(())
    }

    /// Rows are printed as they come (streaming) or at commit: nothing to publish.
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Transaction>, ConnectorError> {
        Ok(None)
    }

    fn commit(mut self: Box<Self>) -> Result<SinkReport, ConnectorError> {
        if self.streaming {
            let text = self.hidden_rows_line();
            self.print(&text)?;
            return Ok(SinkReport { rows: self.rows, files: Vec::new() });
        }
        let mut text = String::new();
        if self.max_rows > 0 {
            text = if self.kept.is_empty() {
                self.table(&[RecordBatch::new_empty(self.schema.clone())])?
            } else {
                self.table(&self.kept)?
            };
        }
        text.push_str(&self.hidden_rows_line());
        self.print(&text)?;
        Ok(SinkReport { rows: self.rows, files: Vec::new() })
    }
}

/// Counts rows and drops them.
pub(super) fn blackhole() -> Box<dyn SinkWriter> {
    Box::new(Blackhole { rows: 0 })
}

struct Blackhole {
    rows: u64,
}

impl SinkWriter for Blackhole {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<Transaction>, ConnectorError> {
        Ok(None)
    }

    fn commit(self: Box<Self>) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport { rows: self.rows, files: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn spec(text: &str) -> SinkSpec {
        toml::from_str(text).unwrap_or_else(|e| panic!("bad test spec: {e}"))
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]))
    }

    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        let names: Vec<String> = ids.clone().map(|i| format!("n{i}")).collect();
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(StringArray::from(names))],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap_or_else(|e| panic!("{e}")).clone()).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    fn print(max_rows: Option<usize>, batches: &[RecordBatch]) -> (String, u64) {
        let max = max_rows.map(|n| format!("max_rows = {n}")).unwrap_or_default();
        let out = Captured::default();
        let mut sink =
            console_to(&spec(&format!("id = 'show'\nkind = 'console'\n{max}")), schema(), Box::new(out.clone()), false)
                .unwrap_or_else(|e| panic!("{e}"));
        for batch in batches {
            sink.write(batch).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(out.text(), "", "nothing is printed before commit");
        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.files.is_empty());
        (out.text(), report.rows)
    }

    #[test]
    fn console_prints_the_first_rows_and_counts_the_rest() {
        let (text, rows) = print(Some(3), &[batch(0..2), batch(2..5), batch(5..9)]);
        assert_eq!(rows, 9);
        assert!(text.contains("| id | name |"), "{text}");
        assert!(text.contains("| 2  | n2   |"), "{text}");
        assert!(!text.contains("n3"), "{text}");
        assert!(text.ends_with("… 6 more rows\n"), "{text}");

        let (text, rows) = print(None, &[batch(0..25)]);
        assert_eq!(rows, 25);
        assert!(text.contains("| 19 | n19  |") && !text.contains("n20"), "{text}");
        assert!(text.ends_with("… 5 more rows\n"), "{text}");
    }

    #[test]
    fn console_without_rows_prints_the_header_only() {
        let (text, rows) = print(None, &[]);
        assert_eq!(rows, 0);
        assert!(text.contains("| id | name |") && !text.contains("more rows"), "{text}");
        let (text, _) = print(Some(5), &[batch(0..5)]);
        assert!(text.contains("n4") && !text.contains("more rows"), "{text}");
    }

    #[test]
    fn blackhole_counts_rows() {
        let mut sink = blackhole();
        sink.write(&batch(0..7)).unwrap_or_else(|e| panic!("{e}"));
        sink.write(&batch(0..3)).unwrap_or_else(|e| panic!("{e}"));
        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.rows, report.files.len()), (10, 0));
    }

    #[test]
    fn validate_checks_fields_per_kind() {
        for ok in [
            "kind = 'parquet'\npath = 'out.parquet'",
            "kind = 'csv'\npath = 'out.csv'\nhas_header = false",
            "kind = 'console'\nmax_rows = 5",
            "kind = 'blackhole'",
        ] {
            let text = format!("id = 'out'\n{ok}");
            assert!(validate(&spec(&text)).is_ok(), "{ok}");
        }
        let cases = [
            ("kind = 'parquet'", "`path`"),
            ("kind = 'csv'\npath = ''", "`path`"),
            ("kind = 'jsonl'\npath = 'o.jsonl'\nmax_rows = 3", "`max_rows`"),
            ("kind = 'jsonl'\npath = 'o.jsonl'\nhas_header = true", "`has_header`"),
            ("kind = 'console'\npath = 'o.txt'", "`path`"),
            ("kind = 'console'\nhas_header = true", "`has_header`"),
            ("kind = 'blackhole'\npath = 'o'", "`path`"),
            ("kind = 'blackhole'\nmax_rows = 3", "`max_rows`"),
            ("kind = 'blackhole'\nparallelism = 0", "`parallelism`"),
        ];
        for (body, expected) in cases {
            let message = match validate(&spec(&format!("id = 'out'\n{body}"))) {
                Ok(()) => panic!("{body} should be rejected"),
                Err(e) => e.to_string(),
            };
            assert!(
                message.starts_with("out: invalid configuration: ") && message.contains(expected),
                "{body}: {message}"
            );
        }
    }

    #[test]
    fn streaming_console_prints_rows_as_they_arrive() {
        let out = Captured::default();
        let spec = spec("id = 'show'\nkind = 'console'\nmax_rows = 3");
        let mut sink = console_to(&spec, schema(), Box::new(out.clone()), true).unwrap_or_else(|e| panic!("{e}"));
        sink.write(&batch(0..2)).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.text().contains("| 1  | n1   |"), "{}", out.text());
        assert_eq!(sink.pre_commit(1).unwrap_or_else(|e| panic!("{e}")), None);
        sink.write(&batch(2..6)).unwrap_or_else(|e| panic!("{e}"));
        let text = out.text();
        assert!(text.contains("| 2  | n2   |") && !text.contains("n3"), "{text}");
        let report = sink.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.rows, 6);
        assert!(out.text().ends_with("… 3 more rows\n"), "{}", out.text());
        assert_eq!(blackhole().pre_commit(1).unwrap_or_else(|e| panic!("{e}")), None);
    }
}
