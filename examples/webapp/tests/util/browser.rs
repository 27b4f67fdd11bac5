//! Headless Chromium driven through chromedriver (WebDriver) with fantoccini: Debian's
//! `chromium` and `chromium-driver` packages, which `scripts/install-browser` installs.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;

/// How long chromedriver may take to listen, and Chromium to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a page may take to show what a test expects.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Chromium's flags: headless, and nothing that reaches beyond this machine. `--no-sandbox`
/// because CI runs as root, where Chromium's sandbox cannot start; the pages are our own.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--password-store=basic",
    "--window-size=1024,768",
];

/// A browser session, with its chromedriver and Chromium killed when dropped.
pub struct Browser {
    /// The WebDriver session.
    client: Client,
    /// chromedriver, leader of a process group that Chromium's processes join; taken when
    /// it is stopped.
    driver: Option<Child>,
    /// The profile directory (`--user-data-dir`) and chromedriver's log.
    dir: TempDir,
}

/// Where `program` is on `PATH`, if anywhere.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with an empty profile. Fails,
    /// saying how to install them, if either is missing.
    pub async fn start() -> Browser {
        let missing = |what: &str| -> ! {
            panic!(
                "the end-to-end test needs {what}: Debian's `chromium` and `chromium-driver` \
                 packages. Install them with `bash scripts/install-browser` (as root; it runs \
                 apt-get), then run the test again."
            )
        };
        let chromium = find_on_path("chromium").unwrap_or_else(|| missing("chromium"));
        let chromedriver = find_on_path("chromedriver").unwrap_or_else(|| missing("chromedriver"));

        let dir = tempfile::Builder::new()
            .prefix("lk-web-browser-")
            .tempdir()
            .expect("cannot create the browser's directory");
        let log = std::fs::File::create(dir.path().join("chromedriver.log"))
            .expect("cannot create chromedriver's log");
        let port = super::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share chromedriver's log"))
            .stderr(log)
            // Its own process group, which Chromium's processes inherit, so that one kill of
            // the group ends them all even if the test fails before closing the session.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
        let mut browser_dir = Some(dir);
        let mut driver = Some(driver);
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                let log = browser_dir
                    .as_ref()
                    .map(|d| std::fs::read_to_string(d.path().join("chromedriver.log")))
                    .and_then(Result::ok)
                    .unwrap_or_default();
                kill_group(driver.take());
                panic!(
                    "chromedriver did not listen on port {port} within {START_TIMEOUT:?}\n{log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dir = browser_dir.take().expect("the directory is still ours");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let webdriver = format!("http://127.0.0.1:{port}");
        let connecting = builder.connect(&webdriver);
        let client = match tokio::time::timeout(START_TIMEOUT, connecting).await {
            Ok(Ok(client)) => client,
            failed => {
                let log = std::fs::read_to_string(dir.path().join("chromedriver.log"))
                    .unwrap_or_default();
                kill_group(driver.take());
                panic!(
                    "cannot start a Chromium session: {failed:?}\n--- chromedriver log ---\n{log}"
                );
            }
        };
        Browser {
            client,
            driver,
            dir,
        }
    }

    /// Opens `url`, as typing it in the address bar would.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The address the browser shows.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("cannot read the current URL")
            .to_string()
    }

    /// Goes back one history entry.
    pub async fn back(&self) {
        self.client.back().await.expect("cannot go back");
    }

    /// Goes forward one history entry.
    pub async fn forward(&self) {
        self.client.forward().await.expect("cannot go forward");
    }

    /// Types `text` into the field `css` after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("cannot clear a field");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Clicks the page's submit button.
    pub async fn submit(&self) {
        self.click("button[type=submit]").await;
    }

    /// Waits for the element `css` to appear.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("no {css} on the page: {e}\n{}", self.describe().await),
        }
    }

    /// The text of the element `css`.
    pub async fn text_of(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("cannot read the text of {css}: {e}"))
    }

    /// The visible text of the page's `<main>`.
    pub async fn text(&self) -> String {
        self.text_of("main").await
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("cannot read the page")
    }

    /// Waits until the page's heading is `heading` and its text contains `needle`, and
    /// returns the text; fails with the address and text of the page shown instead. Waiting
    /// for both covers a form that answers with its own page again, plus an error.
    pub async fn expect(&self, heading: &str, needle: &str) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if self.heading().await.as_deref() == Some(heading) {
                // The page may be replaced between finding <main> and reading it (a form
                // that answers with its own page again): a stale element is "not yet".
                if let Some(text) = self.main_text_now().await {
                    if text.contains(needle) {
                        return text;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "expected the page {heading:?} saying {needle:?}\n     got: {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the page's `<main>`, if the page has one and it can be read now.
    async fn main_text_now(&self) -> Option<String> {
        let main = self.client.find(Locator::Css("main")).await.ok()?;
        main.text().await.ok()
    }

    /// The page's `<h1>`, if it has one now.
    async fn heading(&self) -> Option<String> {
        let h1 = self.client.find(Locator::Css("h1")).await.ok()?;
        h1.text().await.ok()
    }

    /// The names of the cookies the browser holds for the current page's site.
    pub async fn cookie_names(&self) -> Vec<String> {
        let cookies = self
            .client
            .get_all_cookies()
            .await
            .expect("cannot read the cookies");
        cookies.iter().map(|c| c.name().to_owned()).collect()
    }

    /// The current address and page text, for failure messages.
    async fn describe(&self) -> String {
        let url = self.client.current_url().await.map(|u| u.to_string());
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        format!("{url:?}\n--- page text ---\n{text}\n--- end ---")
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        kill_group(self.driver.take());
    }

    /// chromedriver's log so far, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.driver.take());
    }
}

/// Kills chromedriver's process group (Chromium included) and reaps chromedriver.
fn kill_group(driver: Option<Child>) {
    if let Some(mut driver) = driver {
        kill_pid_group(driver.id());
        let _ = driver.wait();
    }
}

/// Sends SIGKILL to the process group led by `pid`, a child of ours started with
/// `process_group(0)` and not yet reaped, so the group id cannot belong to anyone else.
fn kill_pid_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
