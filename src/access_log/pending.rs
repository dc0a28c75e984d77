//! Lines waiting for the writer thread. Each thread that ends requests
//! appends to a buffer of its own, under a lock only the writer ever shares
//! (every 50 ms): two workers appending to one buffer bounced its cache lines
//! between the cores on every request. So lines are in order per thread, and
//! threads' lines interleave within a write.

use std::{
    cell::RefCell,
    io::Write,
    sync::{Arc, Mutex},
};

/// How often the writer thread writes what is pending.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Past this much pending text in a thread's buffer, its lines are dropped: a
/// slow disk never slows requests or grows memory without bound.
const MAX_PENDING: usize = 8 << 20;

type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// This thread's buffer, and the address of the [`Pending`] it belongs to.
    static MINE: RefCell<Option<(usize, Buffer)>> = const { RefCell::new(None) };
}

/// The pending lines of an access log, and where they go.
pub(super) struct Pending {
    buffers: Mutex<Vec<Buffer>>,
    /// The output, and the writer's spare buffer.
    out: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
}

impl Pending {
    /// Pending lines written to `out` every [`WRITE_EVERY`] by a thread of
    /// their own. They live as long as the process (an access log is opened
    /// once), so that a request refers to them without a reference count.
    pub(super) fn start(out: Box<dyn Write + Send>) -> std::io::Result<&'static Self> {
        let pending: &'static Self =
            Box::leak(Box::new(Self { buffers: Mutex::default(), out: Mutex::new((out, Vec::new())) }));
        std::thread::Builder::new().name("access-log".into()).spawn(move || loop {
            std::thread::sleep(WRITE_EVERY);
            pending.write();
        })?;
        Ok(pending)
    }

    /// Appends `line` to this thread's buffer.
    pub(super) fn push(&'static self, line: &[u8]) {
        let me = self as *const Self as usize;
        MINE.with_borrow_mut(|mine| {
            let buffer = match mine {
                Some((owner, buffer)) if *owner == me => buffer,
                _ => {
                    let buffer = Buffer::default();
                    self.buffers.lock().expect("access log lock").push(buffer.clone());
                    &mut mine.insert((me, buffer)).1
                }
            };
            let mut lines = buffer.lock().expect("access log lock");
            if lines.len() + line.len() <= MAX_PENDING {
                lines.extend_from_slice(line);
            }
        });
    }

    /// Writes every thread's pending lines; forgets the buffers of threads
    /// that have ended.
    pub(super) fn write(&self) {
        let buffers = self.buffers.lock().expect("access log lock").clone();
        let mut out = self.out.lock().expect("access log lock");
        let (out, spare) = &mut *out;
        for buffer in &buffers {
            std::mem::swap(&mut *buffer.lock().expect("access log lock"), spare);
            if !spare.is_empty() {
                let _ = out.write_all(spare);
                spare.clear();
            }
        }
        let _ = out.flush();
        drop(buffers);
        // Only the list holds an ended thread's buffer.
        self.buffers.lock().expect("access log lock").retain(|buffer| {
            Arc::strong_count(buffer) > 1 || !buffer.lock().expect("access log lock").is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_threads_lines_are_written_in_order_and_ended_threads_forgotten() {
        let out = Shared::default();
        let pending = Pending::start(Box::new(out.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        pending.push(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        pending.write();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t}'s lines, in order, each once");
        }
        // The threads have ended and their lines are out: their buffers go.
        pending.write();
        assert_eq!(pending.buffers.lock().unwrap().len(), 0);
    }
}
