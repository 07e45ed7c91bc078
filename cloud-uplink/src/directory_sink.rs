//! [`DirectorySink`]: delivers batches as files in a local directory.
//!
//! Each batch becomes one file in the framed format ([`crate::stream`]):
//!
//! ```text
//! <dir>/outbox-<class>-<first_seq:020>-<last_seq:020>.vrec
//! ```
//!
//! Zero-padded seqs make names sort in seq order within a class. A delivery
//! writes `.<name>.tmp`, fsyncs it, renames it to `<name>`, then fsyncs the
//! directory; only then does `deliver` return `Ok` (so a confirmed file
//! survives power loss, and a crash mid-write leaves at most a `.tmp` file,
//! never a partial `.vrec`). Redelivery of the same batch after a crash
//! rewrites the same name (idempotent); a redelivered batch with different
//! bounds produces a second file with overlapping records, which readers
//! deduplicate on `(agent_id, seq)`.

use std::path::{Path, PathBuf};

use crate::record::RecordClass;
use crate::sink::{BatchLimits, ClassSet, Sink, SinkError, StoredRecord};
use crate::stream::{encode_frame, header};

/// Writes each batch to a durable file in a directory.
#[derive(Debug, Clone)]
pub struct DirectorySink {
    name: String,
    dir: PathBuf,
    classes: ClassSet,
    limits: Option<BatchLimits>,
}

impl DirectorySink {
    /// A sink named `name` writing into `dir` (created if missing), wanting
    /// every class.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Result<Self, SinkError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            context: format!("creating sink directory {}", dir.display()),
            source,
        })?;
        Ok(DirectorySink {
            name: name.into(),
            dir,
            classes: ClassSet::ALL,
            limits: None,
        })
    }

    /// Restricts the classes this sink wants.
    pub fn with_classes(mut self, classes: ClassSet) -> Self {
        self.classes = classes;
        self
    }

    /// Sets this sink's batch (file) limits instead of the outbox's defaults.
    pub fn with_batch_limits(mut self, limits: BatchLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The target directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File name for a batch.
    pub fn file_name(class: RecordClass, first_seq: u64, last_seq: u64) -> String {
        format!("outbox-{class}-{first_seq:020}-{last_seq:020}.vrec")
    }
}

fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> Result<(), SinkError> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let io = |what: &str, p: &Path| {
        let context = format!("{what} {}", p.display());
        move |source| SinkError::Io { context, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(contents).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("fsyncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(io("renaming into place", &dst))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsyncing directory", dir))?;
    Ok(())
}

impl Sink for DirectorySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, class: RecordClass) -> bool {
        self.classes.contains(class)
    }

    fn batch_limits(&self) -> Option<BatchLimits> {
        self.limits
    }

    async fn deliver(&mut self, batch: &[StoredRecord]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let name = Self::file_name(first.class, first.seq, last.seq);
        let mut buf = Vec::with_capacity(8 + batch.iter().map(|r| r.cbor.len() + 8).sum::<usize>());
        buf.extend_from_slice(&header());
        for r in batch {
            encode_frame(&mut buf, &r.cbor).map_err(|e| SinkError::Fatal {
                message: e.to_string(),
            })?;
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, &name, &buf))
            .await
            .map_err(|e| SinkError::Transient {
                message: "directory write task failed".into(),
                source: Some(Box::new(e)),
            })?
    }
}
