//! Throwaway PostgreSQL clusters for the tests: `initdb` into a temp dir,
//! `pg_ctl start` on a free loopback port (Unix socket in the same dir), trust
//! authentication, fsync off. As root the server runs as the `postgres` user
//! (PostgreSQL refuses root). The binaries come from the Debian packages that
//! `scripts/test-deps` installs; a missing install fails loudly.
//!
//! One shared cluster serves every test (a fresh database each); a test that
//! stops and restarts its server starts a cluster of its own. A watchdog shell
//! stops the shared cluster and removes its directory when the test process
//! exits, however it exits.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::free_port;

pub struct PgCluster {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// Run the server binaries as this user (when the tests run as root).
    run_as: Option<&'static str>,
    /// Extra server options (TLS).
    extra: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    if let Some(v) = versions.pop() {
        return v;
    }
    // Elsewhere: whatever `pg_ctl` the PATH has.
    let out = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no pg_ctl \
         on PATH): run scripts/test-deps, or ./scripts/test which runs it"
    );
    PathBuf::from(path).parent().unwrap().to_path_buf()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Create and start a new cluster.
    pub fn start() -> PgCluster {
        let cluster = Self::create();
        cluster.start_server();
        cluster
    }

    /// A cluster that offers TLS with a certificate for `127.0.0.1` signed by
    /// a throwaway CA (`ca_file`).
    pub fn start_with_tls() -> PgCluster {
        let mut cluster = Self::create();
        let d = cluster.dir.display().to_string();
        let script = format!(
            "set -e; cd {d}; \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout ca.key -out ca.crt -days 2 -subj /CN=rolegate-test-ca 2>/dev/null; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null; \
             printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext; \
             openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
               -out server.crt -days 2 -extfile ext 2>/dev/null; \
             chmod 600 server.key; {chown}",
            chown = cluster
                .run_as
                .map(|u| format!("chown {u}:{u} server.key server.crt"))
                .unwrap_or_default()
        );
        let ok = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(ok.success(), "making the test certificates failed");
        cluster.extra =
            format!("-c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key");
        cluster.start_server();
        cluster
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn create() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("rolegate-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            let ok = Command::new("chown")
                .args([&format!("{user}:{user}"), dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of {} to {user} failed", dir.display());
        }
        let cluster = PgCluster {
            port: free_port(),
            bin: bin_dir(),
            run_as,
            dir,
            extra: String::new(),
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{} {:?} failed: {}{}",
            program.display(),
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start (or start again) the server on the cluster's port.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=400 {}",
            self.port,
            self.dir.display(),
            self.extra
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// Stop the server at once (as a crash would): connections drop.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database; its URL.
    pub async fn database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let mut tries = 0;
        // Concurrent CREATE DATABASE can trip over each other on template1.
        while let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            tries += 1;
            assert!(tries < 20, "CREATE DATABASE failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// Stop the server and remove the directory when process `pid` exits.
    fn remove_when_gone(&self, pid: u32) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match self.run_as {
            Some(user) => format!("runuser -u {user} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            data = self.data(),
            dir = self.dir.display()
        );
        // Deliberately not waited for: it must outlive this process.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "{} {} -D {} -m immediate stop >/dev/null 2>&1",
                    self.run_as
                        .map(|u| format!("runuser -u {u} --"))
                        .unwrap_or_default(),
                    self.bin.join("pg_ctl").display(),
                    self.data()
                ),
            ])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster every test shares (started on first use).
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let c = PgCluster::start();
        c.remove_when_gone(std::process::id());
        c
    })
}
