//! A DNS server for test names, so a process that resolves names the way a
//! container does (`/etc/resolv.conf`, no test-only resolver) can reach the
//! harness's servers by host name. It answers `A` queries for the names it
//! was given, `NODATA` for their other types and `NXDOMAIN` for everything
//! else, over UDP on port 53 (resolv.conf names no port) of a loopback
//! address of its own (127.53.X.Y), so tests run side by side. Binding port
//! 53 needs root, as the tests that chroot into an image do anyway. Stops
//! when dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The most queries remembered for [`DnsServer::queries`].
const MAX_REMEMBERED: usize = 1024;
/// Addresses tried before giving up (one may be taken by a parallel test).
const BIND_ATTEMPTS: u16 = 64;
/// A response's TTL in seconds: short, names move between tests.
const TTL: u32 = 5;

/// A running DNS server; see the module docs.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    /// Serves `records` (name, without the trailing dot, to IPv4 address).
    pub async fn start(records: &[(&str, Ipv4Addr)]) -> anyhow::Result<DnsServer> {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let records: HashMap<String, Ipv4Addr> = records
            .iter()
            .map(|(name, ip)| (name.trim_end_matches('.').to_ascii_lowercase(), *ip))
            .collect();
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            // 127.53.X.Y from the pid and a counter: distinct per test process
            // and per server within it.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let ip = Ipv4Addr::new(127, 53, (pid % 251) as u8, (n % 250 + 1) as u8);
            match UdpSocket::bind((ip, 53)).await {
                Ok(socket) => {
                    let addr = socket.local_addr()?;
                    let queries = Arc::new(Mutex::new(Vec::new()));
                    let task = tokio::spawn(serve(socket, records, queries.clone()));
                    return Ok(DnsServer {
                        addr,
                        queries,
                        task,
                    });
                }
                Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(err).context(
                        "binding UDP port 53 for the test DNS server needs root \
                         (or CAP_NET_BIND_SERVICE)",
                    );
                }
                Err(err) => last_error = Some(err),
            }
        }
        match last_error {
            Some(err) => Err(err).context("no free 127.53.x.y address for the test DNS server"),
            None => bail!("no address tried for the test DNS server"),
        }
    }

    /// The server's address (port 53).
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// An `/etc/resolv.conf` naming only this server.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions timeout:2 attempts:2\n", self.ip())
    }

    /// The names asked for so far, with their query type (`NAME A`,
    /// `NAME AAAA`, `NAME TYPE65`), oldest first.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }
}

async fn serve(
    socket: UdpSocket,
    records: HashMap<String, Ipv4Addr>,
    queries: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(query) = Query::parse(&buf[..len]) else {
            continue;
        };
        if let Ok(mut seen) = queries.lock() {
            if seen.len() < MAX_REMEMBERED {
                seen.push(format!("{} {}", query.name, type_name(query.qtype)));
            }
        }
        let answer = records.get(&query.name.to_ascii_lowercase()).copied();
        let reply = query.reply(&buf[..len], answer);
        let _ = socket.send_to(&reply, peer).await;
    }
}

/// One question of a standard query.
struct Query {
    name: String,
    qtype: u16,
    /// Where the question ends in the request.
    end: usize,
}

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

fn type_name(qtype: u16) -> String {
    match qtype {
        TYPE_A => "A".to_string(),
        28 => "AAAA".to_string(),
        other => format!("TYPE{other}"),
    }
}

impl Query {
    /// The one question of a standard query, or `None` for anything else
    /// (answers, other opcodes, several questions, compressed names).
    fn parse(packet: &[u8]) -> Option<Query> {
        let header = packet.get(..12)?;
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let is_query = flags & 0x8000 == 0;
        let opcode = (flags >> 11) & 0xf;
        let questions = u16::from_be_bytes([header[4], header[5]]);
        if !is_query || opcode != 0 || questions != 1 {
            return None;
        }
        let mut labels = Vec::new();
        let mut at = 12;
        loop {
            let len = usize::from(*packet.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            let label = packet.get(at..at + len)?;
            labels.push(String::from_utf8(label.to_vec()).ok()?);
            at += len;
        }
        let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
        let qclass = u16::from_be_bytes([*packet.get(at + 2)?, *packet.get(at + 3)?]);
        if qclass != CLASS_IN {
            return None;
        }
        Some(Query {
            name: labels.join("."),
            qtype,
            end: at + 4,
        })
    }

    /// The response: the question echoed, and an `A` record when the name
    /// is known and `A` was asked; NXDOMAIN when the name is unknown.
    fn reply(&self, request: &[u8], known: Option<Ipv4Addr>) -> Vec<u8> {
        let recursion_desired = request[2] & 0x01;
        let rcode = if known.is_some() { 0 } else { 3 };
        let answer = known.filter(|_| self.qtype == TYPE_A);
        let mut out = Vec::with_capacity(self.end + 16);
        out.extend_from_slice(&request[..2]); // id
        out.push(0x84 | recursion_desired); // QR, authoritative, RD echoed
        out.push(rcode);
        out.extend_from_slice(&1u16.to_be_bytes()); // questions
        out.extend_from_slice(&u16::from(answer.is_some()).to_be_bytes()); // answers
        out.extend_from_slice(&[0, 0, 0, 0]); // authority, additional
        out.extend_from_slice(&request[12..self.end]);
        if let Some(ip) = answer {
            out.extend_from_slice(&[0xc0, 0x0c]); // the name: the question's
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A standard query for `name` of `qtype`, id 0x1234, recursion desired.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&CLASS_IN.to_be_bytes());
        packet
    }

    #[test]
    fn answers_a_known_name_and_refuses_the_rest() {
        let request = query("registry.imgate.test", TYPE_A);
        let q = Query::parse(&request).unwrap();
        assert_eq!(
            (q.name.as_str(), q.qtype, q.end),
            ("registry.imgate.test", TYPE_A, request.len())
        );
        let reply = q.reply(&request, Some(Ipv4Addr::new(127, 0, 0, 9)));
        assert_eq!(&reply[..2], &[0x12, 0x34], "the id is echoed");
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[127, 0, 0, 9]);

        let aaaa = query("registry.imgate.test", 28);
        let reply = Query::parse(&aaaa)
            .unwrap()
            .reply(&aaaa, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (reply[3] & 0x0f, &reply[6..8]),
            (0, &[0u8, 0][..]),
            "NODATA for AAAA"
        );

        let unknown = query("other.imgate.test", TYPE_A);
        let reply = Query::parse(&unknown).unwrap().reply(&unknown, None);
        assert_eq!(
            (reply[3] & 0x0f, &reply[6..8]),
            (3, &[0u8, 0][..]),
            "NXDOMAIN"
        );
    }

    #[test]
    fn ignores_what_is_not_one_plain_question() {
        let mut answer = query("a.test", TYPE_A);
        answer[2] |= 0x80;
        assert!(Query::parse(&answer).is_none(), "a response");
        let mut compressed = query("a.test", TYPE_A);
        compressed[12] = 0xc0;
        assert!(Query::parse(&compressed).is_none(), "a compressed name");
        let request = query("a.test", TYPE_A);
        assert!(
            Query::parse(&request[..request.len() - 1]).is_none(),
            "truncated"
        );
        assert!(Query::parse(&request[..5]).is_none(), "no header");
    }
}
