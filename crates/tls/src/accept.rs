//! The server side of a handshake on an accepted socket, bounded in time.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::Error;
use crate::identity::{ClientCertificate, client_certificate};

/// Runs the server handshake on `stream`, giving up after `timeout` (a client that
/// connects and says nothing, [`Error::HandshakeTimeout`]). A client that does not speak
/// TLS (plain MQTT on the TLS port) fails at its first bytes ([`Error::Handshake`]), as
/// does one whose certificate the client CA does not vouch for or that has expired.
/// Returns the TLS stream and the identity of the client's certificate, if it presented
/// one; a verified certificate without a usable common name is an error
/// ([`Error::CommonName`]).
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, Option<ClientCertificate>), Error> {
    let peer = stream.peer_addr().ok();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(Error::Handshake { peer, source }),
        Err(_elapsed) => return Err(Error::HandshakeTimeout { peer, timeout }),
    };
    let (_, connection) = stream.get_ref();
    let identity = client_certificate(connection)?;
    Ok((stream, identity))
}
