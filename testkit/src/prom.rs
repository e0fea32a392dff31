//! Reading a node's Prometheus endpoint (`--metrics-addr`) in tests.

use std::io::{Read, Write};

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
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    let mut text = String::new();
    // The server closes the connection after the body; a reset after it
    // still leaves the text read so far.
    let _ = s.read_to_string(&mut text);
    text
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

#[cfg(test)]
mod tests {
    use super::sample;

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
}
