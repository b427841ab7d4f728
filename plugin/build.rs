fn main() {
    let map =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("exports.map");
    println!("cargo:rerun-if-changed={}", map.display());
    // Export only FLBPlugin*: dependencies (crc-fast, through the AWS SDK) carry #[no_mangle]
    // C functions that rustc would otherwise export from the cdylib.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    // Fluent Bit dlclose()s the plugin at exit; keeping the image mapped (-z nodelete)
    // means no late call from a thread that is still winding down lands in unmapped code.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
