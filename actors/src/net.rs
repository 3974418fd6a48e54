//! TCP accept loops shared by the ClientGateway and the DataServer.

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Accepts connections and runs `serve` on each in its own task, at most
/// `max_connections` at once (further connections wait in the backlog).
/// Returns the accept loop's handle; aborting it stops accepting (open
/// connections finish their current request and see the socket close).
pub fn spawn_accept_loop<F, Fut>(listener: TcpListener, max_connections: usize, serve: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let fut = serve(stream);
                    tokio::spawn(async move {
                        fut.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// A future that turns a panic while it is polled into an error holding
/// the panic's message, so a request task that panics still answers its
/// client (at once, rather than after the client's timeout).
pub struct CatchPanic<F: Future> {
    inner: std::pin::Pin<Box<F>>,
}

/// Runs `fut`, catching a panic in it (see [`CatchPanic`]).
pub fn catch_panic<F: Future>(fut: F) -> CatchPanic<F> {
    CatchPanic { inner: Box::pin(fut) }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic with no message".into());
                std::task::Poll::Ready(Err(msg))
            }
        }
    }
}

/// A task that is aborted when this is dropped: held in an actor's state,
/// the task ends with the actor however it ends (a kill or a panic skips
/// `post_stop`, but the state is still dropped).
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
