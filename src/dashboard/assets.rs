//! The dashboard's files, compiled into the binary. Plain HTML, CSS and ES
//! modules as written: what is in `assets/` is what the browser runs.

pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

macro_rules! assets {
    ($(($name:literal, $type:expr)),* $(,)?) => {
        /// Every file by its path under the prefix.
        const ASSETS: &[(&str, Asset)] = &[
            $(($name, Asset { body: include_bytes!(concat!("assets/", $name)), content_type: $type })),*
        ];
    };
}

assets![
    ("index.html", HTML),
    ("style.css", CSS),
    ("js/app.js", JS),
    ("js/api.js", JS),
    ("js/dom.js", JS),
    ("js/dialog.js", JS),
    ("js/views/login.js", JS),
    ("js/views/overview.js", JS),
    ("js/views/users.js", JS),
    ("js/views/user.js", JS),
    ("js/views/invite.js", JS),
    ("js/views/accept.js", JS),
    ("js/views/reset.js", JS),
    ("js/views/audit.js", JS),
    ("js/views/playground.js", JS),
];

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}
