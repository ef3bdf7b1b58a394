//! A minimal HTTP/1.1 client over one keep-alive TCP connection: enough for the few REST calls
//! the load generator makes (create, finish, list, check-timeouts) without pulling in a crate.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// From the first byte written to the last byte of the body read.
    pub elapsed: Duration,
}

impl Response {
    pub fn json(&self) -> io::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// One connection to the server, reopened when the server closes it.
pub struct HttpClient {
    authority: String,
    token: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// `authority` is `host:port`.
    pub fn new(authority: &str, token: Option<&str>) -> HttpClient {
        HttpClient {
            authority: authority.to_string(),
            token: token.map(str::to_string),
            conn: None,
        }
    }

    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, body: Option<&str>) -> io::Result<Response> {
        self.request("POST", path, body).await
    }

    /// Sends one request. A kept-alive connection the server has meanwhile closed fails on
    /// first use; that one case is retried once on a fresh connection.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> io::Result<Response> {
        let reused = self.conn.is_some();
        let head = self.request_head(method, path, body);
        let started = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&head, body)).await {
            Ok(Ok((status, body))) => Ok(Response {
                status,
                body,
                elapsed: started.elapsed(),
            }),
            Ok(Err(_)) if reused => {
                self.conn = None;
                let started = Instant::now();
                let (status, body) =
                    tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&head, body))
                        .await
                        .map_err(|_| timed_out())??;
                Ok(Response {
                    status,
                    body,
                    elapsed: started.elapsed(),
                })
            }
            Ok(Err(error)) => {
                self.conn = None;
                Err(error)
            }
            Err(_) => {
                self.conn = None;
                Err(timed_out())
            }
        }
    }

    fn request_head(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
            self.authority
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        match body {
            Some(body) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )),
            None => head.push_str("Content-Length: 0\r\n\r\n"),
        }
        head
    }

    async fn exchange(&mut self, head: &str, body: Option<&str>) -> io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.authority).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        // One write for head and body: two small writes would meet Nagle and delayed ACKs.
        let mut request = Vec::with_capacity(head.len() + body.map_or(0, str::len));
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body.unwrap_or("").as_bytes());
        conn.get_mut().write_all(&request).await?;
        let (status, body, keep_alive) = read_response(conn).await?;
        if !keep_alive {
            self.conn = None;
        }
        Ok((status, body))
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the HTTP request timed out")
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Reads a status line, headers and a body framed by Content-Length or chunked encoding.
async fn read_response(conn: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("not an HTTP status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("the headers ended early"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                )
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    // RFC 9112: these statuses never carry a body, whatever the headers say.
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    let body = if bodiless {
        Vec::new()
    } else if chunked {
        read_chunked(conn).await?
    } else if let Some(length) = length {
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        body
    } else {
        // No framing: the body runs to the end of the connection.
        keep_alive = false;
        let mut body = Vec::new();
        conn.read_to_end(&mut body).await?;
        body
    };
    Ok((status, body, keep_alive))
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        line.clear();
        conn.read_line(&mut line).await?;
    }
}
