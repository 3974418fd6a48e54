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
