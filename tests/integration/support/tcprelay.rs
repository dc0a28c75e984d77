//! A TCP relay the test can cut: in front of a server (PostgreSQL), it
//! forwards every connection until [`TcpRelay::cut`], which closes every
//! open connection and stops listening, so that a new connection is
//! refused; [`TcpRelay::restore`] listens on the same port again. The
//! server itself is never touched (it may be the machine's shared one).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub struct TcpRelay {
    pub port: u16,
    target: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpRelay {
    /// A relay on a port of its own to `target` (`127.0.0.1:5432`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay =
            Self { port, target: target.parse().unwrap(), accept: Mutex::new(None), open: Arc::default() };
        relay.listen(listener);
        relay
    }

    fn listen(&self, listener: TcpListener) {
        let (target, open) = (self.target, self.open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = open.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(conn);
            }
        });
        *self.accept.lock().unwrap() = Some(accept);
    }

    /// Closes every relayed connection and stops listening: from when this
    /// returns, a connection to the port is refused.
    pub async fn cut(&self) {
        let accept = self.accept.lock().unwrap().take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        let open: Vec<_> = std::mem::take(&mut *self.open.lock().unwrap());
        for conn in open {
            conn.abort();
            let _ = conn.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.listen(listener);
    }
}
