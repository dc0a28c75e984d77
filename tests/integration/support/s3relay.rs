//! A relay in front of an S3 server that notes every request it forwards
//! (method and path), so that tests count object reads at the wire. It reads
//! HTTP/1.1 request heads and bodies (by `Content-Length`, or chunked) to
//! find where each request starts, and forwards every byte as it came;
//! answers flow back untouched.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

pub struct S3Relay {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl S3Relay {
    /// A relay to the S3 server at `endpoint` (`http://127.0.0.1:port`).
    pub async fn start(endpoint: &str) -> Self {
        let target: SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let noted = noted.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = relay(client, server, noted).await;
                    }
                });
            }
        });
        Self { addr, seen, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far: method and path (with its query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many object reads (`GET` of a key, not a listing) were relayed.
    pub fn object_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(method, path)| {
                let path = path.split('?').next().unwrap_or_default();
                // `/{bucket}/{key}`; `/{bucket}/?list-type=2` lists.
                let key = path.trim_start_matches('/').split_once('/').map(|(_, key)| key);
                method == "GET" && key.is_some_and(|key| !key.is_empty())
            })
            .count()
    }
}

impl Drop for S3Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    seen: Arc<Mutex<Vec<(String, String)>>>,
) -> std::io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                back.abort();
                return Ok(());
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
        seen.lock().unwrap().push((method.to_owned(), path.to_owned()));
        let mut length = 0u64;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
        server_write.write_all(&head).await?;
        if chunked {
            loop {
                let mut size_line = Vec::new();
                reader.read_until(b'\n', &mut size_line).await?;
                server_write.write_all(&size_line).await?;
                let size = String::from_utf8_lossy(&size_line);
                let size = u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        let mut line = Vec::new();
                        reader.read_until(b'\n', &mut line).await?;
                        server_write.write_all(&line).await?;
                        if line == b"\r\n" || line.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                copy_exact(&mut reader, &mut server_write, size + 2).await?;
            }
        } else {
            copy_exact(&mut reader, &mut server_write, length).await?;
        }
    }
}

async fn copy_exact(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    mut left: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}
