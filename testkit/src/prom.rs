//! Reading a node's HTTP endpoint (`--metrics-addr`: metrics and probes) in tests
//! and the benchmarks.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The whole HTTP response (status line, headers, body) of `GET /metrics`
/// on `addr`. Panics when the endpoint cannot be reached: a test that reads
/// metrics needs them.
pub fn scrape(addr: &str) -> String {
    request(addr, "GET", "/metrics")
}

/// The whole HTTP/1.1 response (status line, headers, body) to `METHOD
/// PATH` on the node's HTTP endpoint at `addr`, asking the server to close
/// the connection after it. Panics when the endpoint cannot be reached.
pub fn request(addr: &str, method: &str, path: &str) -> String {
    try_request(addr, method, path, None).unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`] returning the failure instead of panicking, for tools that
/// must go on without the endpoint (the benchmarks). With `timeout`, each
/// of connecting, writing the request and reading the response may take
/// that long (a response cut by the read timeout is returned as far as it
/// came); without it they wait as long as the OS lets them.
pub fn try_request(addr: &str, method: &str, path: &str, timeout: Option<Duration>) -> std::io::Result<String> {
    let context = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {addr}: {e}"));
    let mut s = match timeout {
        Some(t) => {
            let sock = addr
                .to_socket_addrs()
                .map_err(|e| context("resolve", e))?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: no address")))?;
            let s = TcpStream::connect_timeout(&sock, t).map_err(|e| context("connect to", e))?;
            s.set_read_timeout(Some(t))
                .map_err(|e| context("set a read timeout on", e))?;
            s.set_write_timeout(Some(t))
                .map_err(|e| context("set a write timeout on", e))?;
            s
        }
        None => TcpStream::connect(addr).map_err(|e| context("connect to", e))?,
    };
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).map_err(|e| context("write to", e))?;
    let mut text = String::new();
    // The server closes the connection after the body; a reset after it
    // (or a read timeout) still leaves the text read so far.
    let _ = s.read_to_string(&mut text);
    Ok(text)
}

/// The status code of an HTTP response's text (0 when there is none).
pub fn status_code(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The value of the sample whose name and labels are `series` (e.g.
/// `driftlock_raft_refused_requests_total` or
/// `driftlock_rpc_latency_seconds_count{method="acquire"}`) in a scrape, as
/// a whole number; 0 when the series is absent (a counter not yet
/// incremented is not exported).
pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let value = l.strip_prefix(series)?;
            // `series` must be the whole name: the rest starts with a space.
            value.starts_with(' ').then(|| value.trim().parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

/// The value of the sample `series` (as for [`sample`]) as a float, `None`
/// when the scrape has no such series or its value does not parse: for
/// gauges in seconds or bytes, and for telling an absent metric (a node
/// that does not export it) from a zero.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(series)?;
        // `series` must be the whole name: the rest starts with a space.
        // OpenMetrics may follow the value with a timestamp.
        value
            .starts_with(' ')
            .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::{sample, value};

    #[test]
    fn the_status_code_is_the_second_word() {
        assert_eq!(super::status_code("HTTP/1.1 503 Service Unavailable\r\n"), 503);
        assert_eq!(super::status_code(""), 0);
    }

    #[test]
    fn a_sample_is_found_by_its_whole_name_and_labels() {
        let text = "# HELP x y\nfoo_total 3\nfoo_total_more 9\nbar{method=\"a\"} 2.0\nbar{method=\"b\"} 5\n";
        assert_eq!(sample(text, "foo_total"), 3);
        assert_eq!(sample(text, "bar{method=\"b\"}"), 5);
        assert_eq!(sample(text, "bar{method=\"a\"}"), 2);
        assert_eq!(sample(text, "baz"), 0);
        assert_eq!(sample(text, "foo"), 0);
    }

    #[test]
    fn a_value_keeps_its_fraction_and_absence_is_none() {
        let text = "# TYPE a gauge\na_seconds 0.25\na_seconds_max 7\nb 1e3 1700000000\nc NaN-ish\n";
        assert_eq!(value(text, "a_seconds"), Some(0.25));
        assert_eq!(value(text, "a_seconds_max"), Some(7.0));
        assert_eq!(value(text, "b"), Some(1000.0));
        assert_eq!(value(text, "c"), None);
        assert_eq!(value(text, "a"), None);
        assert_eq!(value(text, "missing"), None);
    }

    #[test]
    fn a_request_to_a_closed_port_is_an_error_not_a_panic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let r = super::try_request(
            &format!("127.0.0.1:{port}"),
            "GET",
            "/metrics",
            Some(std::time::Duration::from_secs(1)),
        );
        assert!(r.is_err(), "{r:?}");
    }
}
