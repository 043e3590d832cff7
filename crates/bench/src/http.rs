//! A small HTTP/1.1 client for the load generator: one keep-alive connection over a
//! Tokio `TcpStream`, one request at a time, `Content-Length` or chunked answers.
//!
//! It does only what the line-protocol scenario needs (`POST` a ready-made body, read the
//! status and a short answer, `GET /metrics`), so that the generator stays cheap and does
//! not pull a full HTTP stack into a crate that otherwise speaks MQTT.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body kept; longer bodies are read and dropped past this.
const MAX_BODY: usize = 1024 * 1024;

/// Where an `http://host:port/base` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` as written in the URL, for the `Host` header.
    pub authority: String,
    /// The path prefix without a trailing `/` (empty for none).
    pub base_path: String,
}

impl HttpTarget {
    /// Parses `http://host[:port][/base]`; `https` is refused (the generator has no TLS).
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("expected a URL starting with http://, got {url:?}"))?;
        let (authority, path) = match rest.find('/') {
            Some(index) => rest.split_at(index),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("expected a host in the URL, got {url:?}"));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpTarget {
            authority,
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// An answer: its status and (up to [`MAX_BODY`] bytes of) its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Whether the server said it closes the connection after the last answer.
    is_closing: bool,
}

impl HttpConnection {
    /// Connects, with `TCP_NODELAY` (a request is written in at most two calls).
    pub async fn connect(addr: SocketAddr) -> io::Result<HttpConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            stream,
            buffer: Vec::with_capacity(4096),
            is_closing: false,
        })
    }

    /// Whether the server asked to close the connection (`Connection: close`); the
    /// caller should open a new one.
    pub fn is_closing(&self) -> bool {
        self.is_closing
    }

    /// Sends `head` (request line and headers, ending with the empty line) and `body`,
    /// then reads the answer.
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> io::Result<HttpResponse> {
        self.stream.write_all(head).await?;
        if !body.is_empty() {
            self.stream.write_all(body).await?;
        }
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<HttpResponse> {
        self.buffer.clear();
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(invalid("the answer's head is longer than 16 KiB"));
            }
            self.read_some().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])
            .map_err(|_| invalid("the answer's head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| invalid(&format!("expected a status line, got {status_line:?}")))?;
        let mut content_length = None;
        let mut is_chunked = false;
        self.is_closing = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid(&format!("bad Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                is_chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                self.is_closing = value.eq_ignore_ascii_case("close");
            }
        }
        self.buffer.drain(..head_end);
        let has_no_body = status == 204 || status == 304 || (100..200).contains(&status);
        let body = if has_no_body {
            Vec::new()
        } else if is_chunked {
            self.read_chunked().await?
        } else if let Some(length) = content_length {
            while self.buffer.len() < length {
                self.read_some().await?;
            }
            let body = self.buffer[..length.min(MAX_BODY)].to_vec();
            self.buffer.drain(..length);
            body
        } else {
            // No length: the body runs to the end of the connection.
            self.is_closing = true;
            loop {
                let read = self.read_some_or_end().await?;
                if read == 0 || self.buffer.len() > MAX_BODY {
                    break;
                }
            }
            std::mem::take(&mut self.buffer)
        };
        Ok(HttpResponse { status, body })
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buffer, b"\r\n") {
                    break end;
                }
                self.read_some().await?;
            };
            let size_text = std::str::from_utf8(&self.buffer[..line_end])
                .map_err(|_| invalid("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(&format!("bad chunk size {size_text:?}")))?;
            self.buffer.drain(..line_end + 2);
            // The chunk, then its CRLF (for the last, zero-sized chunk: the empty trailer).
            while self.buffer.len() < size + 2 {
                self.read_some().await?;
            }
            if body.len() < MAX_BODY {
                body.extend_from_slice(&self.buffer[..size]);
            }
            self.buffer.drain(..size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    async fn read_some(&mut self) -> io::Result<()> {
        if self.read_some_or_end().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection in the middle of an answer",
            ));
        }
        Ok(())
    }

    async fn read_some_or_end(&mut self) -> io::Result<usize> {
        if self.buffer.capacity() - self.buffer.len() < 1024 {
            self.buffer.reserve(8192);
        }
        self.stream.read_buf(&mut self.buffer).await
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The samples of a Prometheus text exposition: `name{labels} value` lines, comments
/// skipped, as `(series, value)` with the series written as it appears.
pub fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            // The value follows the last space (labels may contain spaces in quotes).
            let (series, value) = line.trim().rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.parse::<f64>().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_authority_and_base_path() {
        assert_eq!(
            HttpTarget::parse("http://127.0.0.1:8080").unwrap(),
            HttpTarget {
                authority: "127.0.0.1:8080".into(),
                base_path: String::new()
            }
        );
        assert_eq!(
            HttpTarget::parse("http://example.test/influx/").unwrap(),
            HttpTarget {
                authority: "example.test:80".into(),
                base_path: "/influx".into()
            }
        );
        assert!(HttpTarget::parse("https://example.test").is_err());
        assert!(HttpTarget::parse("http:///x").is_err());
    }

    #[test]
    fn prometheus_samples_are_read_with_their_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 12\n\
                    b_total{source=\"mqtt\"} 3.5\nc NaN\n\n";
        let samples = parse_prometheus(text);
        assert_eq!(samples[0], ("a_total".to_owned(), 12.0));
        assert_eq!(samples[1], ("b_total{source=\"mqtt\"}".to_owned(), 3.5));
        assert_eq!(samples[2].0, "c");
    }

    #[tokio::test]
    async fn answers_with_length_chunks_and_no_body_are_read_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nwrong",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            ];
            let mut buffer = vec![0u8; 4096];
            for answer in answers {
                // Each request here is a head ending in an empty line and a 4-byte body.
                let mut request = Vec::new();
                while find(&request, b"\r\n\r\n").is_none_or(|end| request.len() < end + 8) {
                    let read = socket.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                }
                socket.write_all(answer).await.unwrap();
            }
        });
        let mut connection = HttpConnection::connect(addr).await.unwrap();
        let head = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n";
        let first = connection.send(head, b"body").await.unwrap();
        assert_eq!((first.status, first.body.as_slice()), (204, &b""[..]));
        assert!(first.is_success());
        let second = connection.send(head, b"body").await.unwrap();
        assert_eq!(
            (second.status, second.body.as_slice()),
            (400, &b"wrong"[..])
        );
        assert!(!second.is_success());
        let third = connection.send(head, b"body").await.unwrap();
        assert_eq!((third.status, third.body.as_slice()), (200, &b"abcde"[..]));
        assert!(!connection.is_closing());
        server.await.unwrap();
    }
}
