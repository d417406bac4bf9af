// The same rpath and link arguments as the worker's binaries; see worker/build.rs.
include!("../worker/build.rs");
