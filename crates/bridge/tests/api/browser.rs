//! Real browsers for the test phone's tests: headless Chromium and Firefox, driven over
//! WebDriver (chromedriver or geckodriver, and fantoccini), with a fake microphone that plays
//! a tone.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` packages,
//! Firefox from `firefox-esr` and geckodriver from crates.io (`cargo install geckodriver`), all
//! installed by `scripts/test.sh`; a machine without them fails these tests and says so (they
//! never skip). `CHROMIUM`, `CHROMEDRIVER`, `FIREFOX` and `GECKODRIVER` point at other binaries.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a page may take to get somewhere.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// One headless Chromium with its own chromedriver and profile.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _dir: tempfile::TempDir,
}

/// A browser or driver binary: `$env_var`, else `default`; a missing one fails the test with
/// how to install it (these tests never skip).
fn binary(env_var: &str, default: &str, package: &str) -> String {
    let path = std::env::var(env_var).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: the browser tests need {package}. Run scripts/test.sh (it installs \
         the browsers and drivers), or set {env_var}."
    );
    path
}

/// What the browser's microphone does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mic {
    /// Granted without a prompt; plays a 440 Hz tone.
    Tone,
    /// The person refuses it (every permission prompt is denied).
    Refused,
}

impl Browser {
    /// Starts chromedriver and a Chromium session whose microphone plays a 440 Hz tone.
    pub async fn start() -> Browser {
        Self::start_with(Mic::Tone).await
    }

    /// Starts chromedriver and a Chromium session with this microphone.
    pub async fn start_with(mic: Mic) -> Browser {
        let chromium = binary("CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let dir = tempfile::tempdir().expect("temp dir");
        let tone = dir.path().join("tone.wav");
        std::fs::write(&tone, tone_wav(440.0, 3.0)).expect("tone file");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--use-fake-device-for-media-stream",
            // Without it Chromium gathers no loopback candidates, and every peer here is on
            // loopback.
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=760,1000",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ));
        match mic {
            // A microphone that needs no prompt and plays our tone file.
            Mic::Tone => {
                args.push("--use-fake-ui-for-media-stream".into());
                args.push(format!(
                    "--use-file-for-fake-audio-capture={}",
                    tone.display()
                ));
            }
            Mic::Refused => args.push("--deny-permission-prompts".into()),
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        Self::session(&chromedriver, &[], capabilities, dir).await
    }

    /// Starts geckodriver and a headless Firefox session (Debian's `firefox-esr`) whose
    /// microphone is Firefox's fake one (a tone), granted without a prompt.
    pub async fn firefox() -> Browser {
        let firefox = binary("FIREFOX", "/usr/bin/firefox-esr", "firefox-esr");
        let home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        let geckodriver = binary(
            "GECKODRIVER",
            &format!("{home}/bin/geckodriver"),
            "geckodriver (cargo install geckodriver)",
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("firefox"));
        capabilities.insert(
            "moz:firefoxOptions".into(),
            json!({
                "binary": firefox,
                "args": ["-headless", "-width", "760", "-height", "1000"],
                "prefs": {
                    "media.navigator.streams.fake": true,
                    "media.navigator.permission.disabled": true,
                    // Every peer here is on loopback: gather it, and show real addresses.
                    "media.peerconnection.ice.loopback": true,
                    "media.peerconnection.ice.obfuscate_host_addresses": false,
                },
            }),
        );
        Self::session(&geckodriver, &["--log", "fatal"], capabilities, dir).await
    }

    async fn session(
        driver_binary: &str,
        driver_args: &[&str],
        capabilities: serde_json::Map<String, Value>,
        dir: tempfile::TempDir,
    ) -> Browser {
        let port = free_port();
        let driver = Command::new(driver_binary)
            .arg(format!("--port={port}"))
            .args(driver_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_binary}: {e}"));
        let mut guard = DriverGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url).await;
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot start a browser session with {driver_binary}: {e}"));
        Browser {
            client,
            driver: guard.0.take().expect("driver"),
            _dir: dir,
        }
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("page opens");
    }

    pub async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click #{id}: {e}"));
    }

    /// Runs `script` (a function body that may `return`) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the element with this id.
    pub async fn text(&self, id: &str) -> String {
        self.js(&format!(
            "const e = document.getElementById({id:?}); return e ? e.textContent : null;"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the element's text satisfies `done`; returns it.
    pub async fn wait_text(&self, id: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let text = self.text(id).await;
            if done(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "#{id} is still {text:?}; the feed: {}",
                self.text("feed").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's WebRTC statistics, gathered by `fold`: JavaScript run for every entry `s`
    /// of `getStats()`, filling the object `found`. `Null` before the page has a connection.
    async fn stats(&self, fold: &str) -> Value {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
               const pc = window.phone && window.phone.pc;
               if (!pc) {{ done(null); return; }}
               pc.getStats().then(report => {{
                 const found = {{}};
                 report.forEach(s => {{ {fold} }});
                 done(found);
               }}, () => done(null));"#
        );
        self.client
            .execute_async(&script, vec![])
            .await
            .expect("stats")
    }

    /// The page's received audio, from WebRTC's own statistics: packets, and total energy
    /// (zero for silence; `None` where the browser does not report it).
    pub async fn inbound_audio(&self) -> (u64, Option<f64>) {
        let stats = self
            .stats(
                r#"if (s.type === "inbound-rtp" && s.kind === "audio") {
                     found.packets = s.packetsReceived || 0;
                     found.energy = s.totalAudioEnergy === undefined ? null : s.totalAudioEnergy;
                   }"#,
            )
            .await;
        (
            stats["packets"].as_u64().unwrap_or(0),
            stats["energy"].as_f64(),
        )
    }

    /// Waits until the page has received at least `packets` audio packets carrying sound
    /// (where the browser reports the energy).
    pub async fn hears(&self, packets: u64) -> (u64, Option<f64>) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let (received, energy) = self.inbound_audio().await;
            if received >= packets && energy.is_none_or(|e| e > 0.0) {
                return (received, energy);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page heard {received} packets, energy {energy:?}; state {:?}, feed: {}",
                self.text("state").await,
                self.text("feed").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the browser's WebRTC stack has taken in the bridge's RTCP reports: a
    /// sender report about the audio it receives (`remote-outbound-rtp`, packets sent) and a
    /// receiver report about the audio it sends (`remote-inbound-rtp`) from which it worked out
    /// a round trip, which it can only do when the report echoes its own sender report. The
    /// bridge's reports come every 5 s. Returns what the statistics said.
    pub async fn believes_our_reports(&self) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let reports = self
                .stats(
                    r#"if (s.type === "remote-outbound-rtp" && s.kind === "audio") {
                         found.sent = s.packetsSent;
                       }
                       if (s.type === "remote-inbound-rtp" && s.kind === "audio") {
                         found.lost = s.packetsLost;
                         found.rtt = s.roundTripTime === undefined ? null : s.roundTripTime;
                       }"#,
                )
                .await;
            if reports["sent"].as_u64().unwrap_or(0) > 0 && reports["rtt"].is_number() {
                return reports;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser has not taken in our reports: {reports}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A PNG of the page, for the README and for looking at.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Kills chromedriver if the session never starts.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_for_driver(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(format!("{url}/status")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer on {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A mono 16-bit 48 kHz WAV of a sine tone.
fn tone_wav(frequency: f64, seconds: f64) -> Vec<u8> {
    let rate = 48_000u32;
    let samples = (f64::from(rate) * seconds) as u32;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let t = f64::from(n) / f64::from(rate);
        let sample = (0.5 * (2.0 * std::f64::consts::PI * frequency * t).sin() * 32767.0) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}
