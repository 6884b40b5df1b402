//! `PYTORCH_CUDA_ALLOC_CONF` is set before any CUDA use unless the user set
//! it. Its own test binary: changing the environment while other test
//! threads run (and read it) would be unsound.

use radvox::data::layout::Layout;
use radvox::train::{Trainer, VaeRecipe};
use radvox::{Dataset, DatasetConfig, Split};

mod common;

#[test]
fn cuda_allocator_config_is_set_unless_the_user_did() {
    std::env::remove_var("PYTORCH_CUDA_ALLOC_CONF");
    let ds = || {
        let cfg = DatasetConfig { layout: Layout::Resample { zhw: [8, 16, 16] }, ..Default::default() };
        Dataset::open(common::mini(), Split::Train, &cfg).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let _t = Trainer::vae(ds(), None, VaeRecipe::default(), common::cpu_runtime(dir.path())).unwrap();
    assert_eq!(std::env::var("PYTORCH_CUDA_ALLOC_CONF").unwrap(), "expandable_segments:True,max_split_size_mb:128");
    std::env::set_var("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64");
    let other = tempfile::tempdir().unwrap(); // the first trainer holds `dir`
    let _t = Trainer::vae(ds(), None, VaeRecipe::default(), common::cpu_runtime(other.path())).unwrap();
    assert_eq!(std::env::var("PYTORCH_CUDA_ALLOC_CONF").unwrap(), "max_split_size_mb:64");
}
