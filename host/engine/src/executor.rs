//! The engine's own executors: one tokio runtime for I/O (sources, sinks,
//! checkpoints, coordinators) and one for guest CPU work (operator subtasks
//! running Wasm), so that a busy operator never delays a checkpoint's file
//! writes and a slow disk never idles the cores guests run on. A job is
//! driven on them whatever runtime the caller uses (current-thread,
//! multi-thread, or none but a plain executor): the caller only waits for a
//! task handle. The model is DataFusion's dedicated executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;

use crate::EngineError;

/// The two runtimes. Dropped without waiting: tasks still on them are
/// cancelled (a job's own future aborts them first; see [`Running`]).
pub(crate) struct Executors {
    io: Handle,
    guest: Handle,
    /// Owned here, shut down in `drop`.
    runtimes: Vec<Runtime>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Executors")
    }
}

impl Executors {
    /// Threads: as many guest workers as cores (Wasm is CPU-bound); I/O
    /// workers are few, as their blocking work goes to the blocking pool.
    pub(crate) fn new() -> Result<Self, EngineError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let build = |name: &str, threads: usize| {
            Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
                .map_err(|e| EngineError::Internal(format!("cannot start the {name} threads: {e}")))
        };
        let (io, guest) = (build("flumen-io", cores.clamp(2, 4))?, build("flumen-guest", cores)?);
        Ok(Self { io: io.handle().clone(), guest: guest.handle().clone(), runtimes: vec![io, guest] })
    }

    pub(crate) fn guest(&self) -> Handle {
        self.guest.clone()
    }

    /// Runs `future` on the I/O executor; the returned future waits for it
    /// from any runtime and cancels it when dropped.
    pub(crate) fn spawn_io<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Running<T> {
        Running(self.io.spawn(future))
    }
}

impl Drop for Executors {
    fn drop(&mut self) {
        // Not `Runtime::drop`, which blocks and so panics when the last
        // engine handle is dropped inside the caller's async code.
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// A task on an engine executor, awaited by its caller: aborted when dropped,
/// so cancelling the caller's future cancels the work.
pub(crate) struct Running<T>(JoinHandle<T>);

impl<T> Future for Running<T> {
    type Output = Result<T, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|e| {
                if e.is_panic() {
                    EngineError::Internal(format!("an engine task panicked: {e}"))
                } else {
                    EngineError::Internal("the engine shut down while a job was running".into())
                }
            })
        })
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
