//! What a run leaves for people: CSV logs (one row per optimizer step, one
//! per validation), created at the first row and cut back to a checkpoint's
//! step when the run resumes, a progress bar, and the loss plot drawn from
//! the whole logs (so a resumed run's picture covers everything).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::TrainError;
use crate::io::chart::{line_chart, Series, COLORS};
use crate::io::png::Canvas;

/// A CSV log; the file is created (with its header) at the first row.
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    header: String,
    file: Option<std::fs::File>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.into(), source }
}

impl CsvLog {
    /// A log at `path` with these columns.
    pub fn new(path: &Path, columns: &[&str]) -> CsvLog {
        CsvLog { path: path.into(), header: columns.join(","), file: None }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps only the rows whose column `key` is at most `upto` (a resumed
    /// run continues from its checkpoint's step: later rows belong to the
    /// interrupted part and would be logged again). A log with other columns
    /// is an error; a missing log is fine.
    pub fn keep_upto(&self, key: &str, upto: f64) -> Result<(), TrainError> {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return Ok(()) };
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        if header != self.header {
            return Err(TrainError::Config(format!(
                "{} has columns {header:?}, not {:?}: not this run's log",
                self.path.display(),
                self.header
            )));
        }
        let col = self.header.split(',').position(|c| c == key).expect("the key is a column");
        let mut kept = format!("{header}\n");
        for line in lines {
            let v: f64 = line.split(',').nth(col).and_then(|v| v.parse().ok()).unwrap_or(f64::INFINITY);
            if v <= upto {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        crate::io::write_atomic(&self.path, kept.as_bytes()).map_err(io_err(&self.path))
    }

    /// The value of column `key` in the last row, if any.
    pub fn last(&self, key: &str) -> Option<f64> {
        let (header, rows) = read_csv(&self.path);
        let col = header.iter().position(|h| h == key)?;
        rows.last()?.get(col).copied()
    }

    /// Appends a row (creating the file with its header first).
    pub fn row(&mut self, values: &[f64]) -> Result<(), TrainError> {
        let io = io_err(&self.path);
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(&io)?;
            }
            let new = !self.path.exists();
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(&io)?;
            if new {
                writeln!(f, "{}", self.header).map_err(&io)?;
            }
            self.file = Some(f);
        }
        let line = values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",");
        writeln!(self.file.as_mut().expect("opened above"), "{line}").map_err(&io)
    }
}

/// Columns and rows of a CSV log of numbers (missing file: empty).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let Ok(text) = std::fs::read_to_string(path) else { return (Vec::new(), Vec::new()) };
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap_or("").split(',').map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    (header, rows)
}

/// One series per `(column, legend, factor)` of a log, against column `x`.
fn series_of(path: &Path, x: &str, columns: &[(String, String, f64)]) -> Vec<Series> {
    let (header, rows) = read_csv(path);
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(xi) = col(x) else { return Vec::new() };
    columns
        .iter()
        .enumerate()
        .filter_map(|(k, (name, legend, factor))| {
            let ci = col(name)?;
            let points = rows.iter().filter(|r| r.len() > ci.max(xi)).map(|r| (r[xi], r[ci] * factor)).collect();
            Some(Series { name: legend.to_uppercase(), points, color: COLORS[k % COLORS.len()] })
        })
        .collect()
}

/// Draws `out/loss.png` from the whole logs: the loss parts per optimizer
/// step on top, the validation metrics per epoch below (when there are any).
pub fn plot(
    out: &Path,
    title: &str,
    train_log: &Path,
    losses: &[(String, String, f64)],
    val_log: &Path,
    metrics: &[(String, String, f64)],
) -> Result<(), TrainError> {
    let top = line_chart(title, "OPTIMIZER STEP", &series_of(train_log, "step", losses), true);
    let val = series_of(val_log, "epoch", metrics);
    let canvas = if val.iter().any(|s| !s.points.is_empty()) {
        let bottom = line_chart("VALIDATION", "EPOCH", &val, false);
        let mut c = Canvas::new(top.width, top.height + bottom.height);
        c.blit(&top, 0, 0);
        c.blit(&bottom, 0, top.height);
        c
    } else {
        top
    };
    let path = out.join("loss.png");
    canvas.save_png(&path).map_err(io_err(&path))
}

/// A progress bar for one epoch (hidden when not `enabled`).
pub fn progress_bar(n: usize, start: usize, epoch: usize, enabled: bool) -> indicatif::ProgressBar {
    let bar = if enabled { indicatif::ProgressBar::new(n as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {epoch}"));
    bar.set_position(start as u64);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_created_at_its_first_row_and_cut_back_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/log.csv");
        let mut log = CsvLog::new(&p, &["epoch", "step", "loss"]);
        assert!(!p.exists(), "nothing written before a row");
        for s in 1..=5 {
            log.row(&[0.0, s as f64, 1.0 / s as f64]).unwrap();
        }
        drop(log);
        let log = CsvLog::new(&p, &["epoch", "step", "loss"]);
        log.keep_upto("step", 3.0).unwrap();
        let (h, rows) = read_csv(&p);
        assert_eq!(h, ["epoch", "step", "loss"]);
        assert_eq!(rows.iter().map(|r| r[1]).collect::<Vec<_>>(), [1.0, 2.0, 3.0]);
        let other = CsvLog::new(&p, &["a", "b"]);
        assert!(other.keep_upto("b", 1.0).is_err(), "another run's log is not cut");
    }
}
