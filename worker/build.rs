// Makes every binary of this crate find libtorch without LD_LIBRARY_PATH.
//
// torch-sys exports the folder it linked against as DEP_TCH_LIBTORCH_LIB;
// an rpath to it goes into our binaries. `--no-as-needed -ltorch` keeps
// libtorch.so (and through it libtorch_cuda.so) as a dependency even though
// no symbol is used from it directly: without it the linker drops it and a
// GPU machine sees no CUDA device.
//
// Link arguments do not pass from a library to the crates that use it, so
// each crate with binaries that link libtorch (cli) includes this script.

fn main() {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report DEP_TCH_LIBTORCH_LIB; binaries will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-L{lib}");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:libtorch_lib={lib}");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
