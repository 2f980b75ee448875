//! Health check: healthy when `GET url` answers with an expected status.
//!
//! Uses the `http` capability (not `probe`), so the operator's grant can
//! limit it to a URL prefix and `GET`.

use bronze_plugin_sdk::http::{self, Error, Request};
use bronze_plugin_sdk::{HealthCheck, Report, config};

struct HttpCheck;

impl HealthCheck for HttpCheck {
    fn check() -> Report {
        let (url, expect, timeout_ms) = match read_config() {
            Ok(config) => config,
            Err(e) => return Report::unknown(e),
        };
        let mut request = Request::get(&url);
        request.timeout_ms = timeout_ms;
        match http::send(&request) {
            Ok(response) if expect.matches(response.status) => {
                with_final_url(Report::healthy(format!("GET {url}: {}", response.status)), &url, &response.url)
                    .detail("status", response.status)
            }
            Ok(response) => with_final_url(
                Report::unhealthy(format!("GET {url}: {} (expected {})", response.status, expect.text)),
                &url,
                &response.url,
            )
            .detail("status", response.status),
            Err(Error::Denied(why)) => Report::unknown(format!("denied: {why}")),
            // A malformed request comes from a malformed `url`.
            Err(Error::InvalidRequest(why)) => Report::unknown(format!("config key `url`: {why}")),
            Err(e) => Report::unhealthy(format!("GET {url}: {}", e.describe())),
        }
    }
}

/// Notes where redirects led, when they did.
fn with_final_url(report: Report, url: &str, final_url: &str) -> Report {
    if url == final_url { report } else { report.detail("final-url", final_url) }
}

/// `url`, `expect-status` and `timeout-ms`, or a message naming the bad key.
fn read_config() -> Result<(String, Expect, Option<u32>), String> {
    let url = config::require("url")?;
    let expect = Expect::parse(&config::get_or("expect-status", "200"))
        .map_err(|item| format!("config key `expect-status`: {item:?} is not a status code or class like 2xx"))?;
    Ok((url, expect, config::get_parsed("timeout-ms")?))
}

/// The healthy statuses: exact codes and classes (`2xx` is 200..=299).
#[derive(Debug)]
struct Expect {
    /// Exact codes, and classes as their hundreds digit times 100.
    codes: Vec<u16>,
    classes: Vec<u16>,
    /// As configured, for summaries.
    text: String,
}

impl Expect {
    /// Parses a comma list like `200,204` or `2xx,301`; the bad item on error.
    fn parse(text: &str) -> Result<Self, String> {
        let mut expect = Expect { codes: Vec::new(), classes: Vec::new(), text: text.trim().to_string() };
        for item in text.split(',').map(str::trim) {
            let lower = item.to_ascii_lowercase();
            if let Some(digit) = lower.strip_suffix("xx").filter(|d| matches!(*d, "1" | "2" | "3" | "4" | "5")) {
                expect.classes.push(digit.parse::<u16>().unwrap_or_default() * 100);
            } else if let Ok(code @ 100..=599) = item.parse::<u16>() {
                expect.codes.push(code);
            } else {
                return Err(item.to_string());
            }
        }
        Ok(expect)
    }

    fn matches(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100 * 100))
    }
}

bronze_plugin_sdk::export_health_check!(HttpCheck);

#[cfg(test)]
mod tests {
    use super::Expect;

    #[test]
    fn codes_and_classes() {
        let expect = Expect::parse("200, 204,3XX").unwrap();
        assert!(expect.matches(200) && expect.matches(204) && expect.matches(301) && expect.matches(399));
        assert!(!expect.matches(201) && !expect.matches(404) && !expect.matches(500));
    }

    #[test]
    fn bad_items() {
        for bad in ["", "20", "600", "abc", "6xx", "2x", "200,,204"] {
            assert!(Expect::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
