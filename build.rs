//! Rebuild when a migration is added: `sqlx::migrate!` embeds the files but
//! does not tell cargo to watch the directory.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
