//! Where the segments live: in memory, counted in DataFusion's memory pool
//! ([`Budget`]), or written to the spill directory as Arrow IPC when the
//! pool refuses more ([`Store`]).
//!
//! Every byte a segment holds is reserved from the pool before it is kept.
//! When a reservation is refused, segments are written out — a scan task
//! writes all of its own, a bucket being processed makes room by writing
//! other buckets' — and read back when their bucket's turn comes. So
//! `--memory-limit` bounds the operators through the pool itself, with no
//! estimate of the history's size.

use std::io::{BufReader, BufWriter};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SpillFile;

use super::segments::Segment;
use crate::error::{Error, Result};

/// The build's share of the memory pool, and its spill statistics.
pub struct Budget {
    reservation: Mutex<MemoryReservation>,
    env: Arc<RuntimeEnv>,
    /// The pool's size, when it has one.
    pub limit: Option<usize>,
    /// Write every segment out as soon as it is complete (tests).
    pub always_spill: bool,
    /// The most it may hold, below the pool's size ([`Budget::capped`]).
    cap: Option<usize>,
    spilled: Mutex<(usize, u64)>,
    peak: std::sync::atomic::AtomicUsize,
}

impl Budget {
    /// A spillable consumer of `env`'s pool named `name`.
    pub fn new(env: Arc<RuntimeEnv>, name: &str, always_spill: bool) -> Self {
        let reservation = MemoryConsumer::new(name)
            .with_can_spill(true)
            .register(&env.memory_pool);
        let limit = match env.memory_pool.memory_limit() {
            MemoryLimit::Finite(n) => Some(n),
            _ => None,
        };
        Self {
            reservation: Mutex::new(reservation),
            env,
            limit,
            cap: None,
            always_spill,
            spilled: Mutex::new((0, 0)),
            peak: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryReservation> {
        self.reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At most the pool's size less `headroom` (and at least half of it)
    /// held at once by what can be written out: the rest is for the
    /// operators above the build in the same task (a cluster's task
    /// writing a report's step). [`Budget::limit`] becomes that cap.
    pub fn capped(mut self, headroom: usize) -> Self {
        if let Some(limit) = self.limit {
            let cap = limit - headroom.min(limit / 2);
            self.cap = Some(cap);
            self.limit = Some(cap);
        }
        self
    }

    /// Reserves `bytes` more, if the pool grants them (and the cap).
    pub fn try_grow(&self, bytes: usize) -> bool {
        if self.always_spill {
            return false;
        }
        let r = self.lock();
        if self
            .cap
            .is_some_and(|cap| r.size().saturating_add(bytes) > cap)
        {
            return false;
        }
        let ok = r.try_grow(bytes).is_ok();
        self.peak
            .fetch_max(r.size(), std::sync::atomic::Ordering::Relaxed);
        ok
    }

    /// The most it held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reserves `bytes` more whatever the pool says (memory already in use
    /// that cannot be written out).
    pub fn grow(&self, bytes: usize) {
        let r = self.lock();
        r.grow(bytes);
        self.peak
            .fetch_max(r.size(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Gives `bytes` back.
    pub fn shrink(&self, bytes: usize) {
        let r = self.lock();
        let n = bytes.min(r.size());
        r.shrink(n);
    }

    /// Bytes reserved now.
    pub fn held(&self) -> usize {
        self.lock().size()
    }

    /// Segments written out so far, and their bytes on disk.
    pub fn spilled(&self) -> (usize, u64) {
        *self.spilled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `batch` to a new file in the spill directory.
    pub fn write(&self, batch: &RecordBatch, what: &str) -> Result<Arc<dyn SpillFile>> {
        let file = self.env.disk_manager.create_tmp_file(what).map_err(|e| {
            Error::MemoryLimit(format!(
                "the history does not fit in memory and cannot be written to the temp dir: {e}"
            ))
        })?;
        let out = BufWriter::with_capacity(1 << 20, file.open_writer()?);
        let mut writer = StreamWriter::try_new(out, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
        let mut inner = writer
            .into_inner()?
            .into_inner()
            .map_err(|e| Error::Internal(format!("spill file: {e}")))?;
        inner.finish()?;
        let mut s = self.spilled.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        s.1 += file.size().unwrap_or(0);
        Ok(file)
    }
}

/// Reads a batch written by [`Budget::write`].
pub fn read(file: &Arc<dyn SpillFile>) -> Result<RecordBatch> {
    let path = file
        .path()
        .ok_or_else(|| Error::Internal("a spill file without a local path".into()))?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, f), None)?;
    reader
        .next()
        .transpose()?
        .ok_or_else(|| Error::Internal("an empty spill file".into()))
}

/// A segment in memory (its bytes held in the [`Budget`]) or on disk.
pub enum Part<S> {
    /// In memory.
    Mem(Arc<S>),
    /// Written out.
    Spilled(Arc<dyn SpillFile>),
}

/// The parts of every bucket of one kind of segment.
pub struct Store<S> {
    buckets: Vec<Mutex<Vec<Part<S>>>>,
}

impl<S: Segment> Store<S> {
    /// A store of `buckets` empty buckets.
    pub fn new(buckets: usize) -> Self {
        Self {
            buckets: (0..buckets).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether it has no bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn bucket(&self, b: usize) -> std::sync::MutexGuard<'_, Vec<Part<S>>> {
        self.buckets[b]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `segment` in bucket `b`: in memory when the budget grants its
    /// bytes (and `spill` is false), else written out.
    pub fn add(&self, b: usize, mut segment: S, budget: &Budget, spill: bool) -> Result<()> {
        if segment.is_empty() {
            return Ok(());
        }
        segment.seal();
        let part = if !spill && budget.try_grow(segment.bytes()) {
            Part::Mem(Arc::new(segment))
        } else {
            Part::Spilled(budget.write(&segment.to_batch()?, S::NAME)?)
        };
        self.bucket(b).push(part);
        Ok(())
    }

    /// Bucket `b`'s segments, in memory: the spilled ones read back, their
    /// bytes reserved whatever the pool says (see [`Self::make_room`]).
    /// The bucket keeps its segments when `keep` (they are read again
    /// later), else it is emptied. Returns the segments and the bytes the
    /// caller now holds in the budget and gives back when done with them.
    pub fn load(&self, b: usize, budget: &Budget, keep: bool) -> Result<(Vec<Arc<S>>, usize)> {
        let parts: Vec<Part<S>> = if keep {
            self.bucket(b)
                .iter()
                .map(|p| match p {
                    Part::Mem(s) => Part::Mem(Arc::clone(s)),
                    Part::Spilled(f) => Part::Spilled(Arc::clone(f)),
                })
                .collect()
        } else {
            std::mem::take(&mut *self.bucket(b))
        };
        let mut segments = Vec::with_capacity(parts.len());
        let mut owned = 0;
        for p in parts {
            match p {
                Part::Mem(s) => {
                    if !keep {
                        owned += s.bytes();
                    }
                    segments.push(s);
                }
                Part::Spilled(f) => {
                    let s = S::from_batch(&read(&f)?)?;
                    budget.grow(s.bytes());
                    owned += s.bytes();
                    segments.push(Arc::new(s));
                }
            }
        }
        Ok((segments, owned))
    }

    /// Drops bucket `b`'s segments (their bytes given back, their files
    /// removed).
    pub fn clear(&self, b: usize, budget: &Budget) {
        for p in std::mem::take(&mut *self.bucket(b)) {
            if let Part::Mem(s) = p {
                budget.shrink(s.bytes());
            }
        }
    }

    /// Bytes bucket `b` holds in memory and on disk.
    pub fn size(&self, b: usize) -> (usize, u64) {
        let g = self.bucket(b);
        let mut mem = 0;
        let mut disk = 0;
        for p in g.iter() {
            match p {
                Part::Mem(s) => mem += s.bytes(),
                Part::Spilled(f) => disk += f.size().unwrap_or(0),
            }
        }
        (mem, disk)
    }

    /// Writes out in-memory segments of buckets other than those in
    /// `busy`, largest first, until `want` bytes are given back to the
    /// budget; returns the bytes given back.
    pub fn make_room(&self, want: usize, busy: &[usize], budget: &Budget) -> Result<usize> {
        let mut freed = 0;
        while freed < want {
            // the largest in-memory segment not busy
            let mut best: Option<(usize, usize, usize)> = None;
            for b in 0..self.buckets.len() {
                if busy.contains(&b) {
                    continue;
                }
                let g = self.bucket(b);
                for (i, p) in g.iter().enumerate() {
                    if let Part::Mem(s) = p {
                        let n = s.bytes();
                        if best.is_none_or(|(_, _, m)| n > m) {
                            best = Some((b, i, n));
                        }
                    }
                }
            }
            let Some((b, i, _)) = best else { break };
            let mut g = self.bucket(b);
            let Some(Part::Mem(s)) = g.get(i) else {
                continue;
            };
            let bytes = s.bytes();
            let file = budget.write(&s.to_batch()?, S::NAME)?;
            g[i] = Part::Spilled(file);
            budget.shrink(bytes);
            freed += bytes;
        }
        Ok(freed)
    }
}
