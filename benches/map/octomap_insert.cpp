// OctoMap side of the streaming voxel map insertion benchmark
// (benches/map_insert.rs; driven by scripts/map_bench.sh, not in CI).
//
// Reads a points file written by the Rust bench, inserts every frame into an
// octomap::OcTree with OctoMap's default sensor model (set explicitly) and
// times only the insertPointCloud calls. Prints one JSON line to stdout.
//
//   octomap_insert POINTS_FILE [--res 0.2] [--out-occupied FILE] [--count-updates]
//
// POINTS_FILE (little-endian): magic "RVXPTS1\0", u32 frame count; per frame
// f64 origin[3] (sensor position, world), u32 n, n x f32[3] world points.
// --out-occupied FILE: u32 count, count x f32[3] centres of the occupied
// voxels at full resolution (pruned leaves are expanded into their voxels).
// --count-updates: a separate, untimed pass on a fresh tree sums
// |free_cells| + |occupied_cells| of computeUpdate per frame, i.e. the voxel
// updates insertPointCloud applies (OctoMap deduplicates within a frame).
//
// Threads: OctoMap's ray casting (computeUpdate) is templated code in the
// headers with `#pragma omp parallel for` under `#ifdef _OPENMP`, so it is
// compiled into this program and parallel only if this file is built with
// -fopenmp (Debian's liboctomap1.9 is not linked against libgomp either).
// scripts/map_bench.sh builds without -fopenmp; should someone build with it,
// omp_set_num_threads(1) below runs before the tree is constructed, which is
// where OctoMap sizes its per-thread key rays (computeUpdate later calls
// omp_set_num_threads(keyrays.size()), so setting it afterwards would not
// stick).
//
// Errors (usage, unreadable/bad/truncated input, unwritable output): message
// on stderr, exit 2. On success the process exits without destroying the tree.

#include <octomap/octomap.h>
#include <octomap/OcTree.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "octomap_insert reads and writes little-endian files on a little-endian host only"
#endif

#define RVX_STR2(x) #x
#define RVX_STR(x) RVX_STR2(x)
#if defined(OCTOMAP_VERSION)
static const char* kOctomapVersion = RVX_STR(OCTOMAP_VERSION);
#elif defined(RADVOX_OCTOMAP_VERSION)
// Passed by scripts/map_bench.sh from dpkg (the headers define no version).
static const char* kOctomapVersion = RADVOX_OCTOMAP_VERSION;
#else
static const char* kOctomapVersion = "unknown";
#endif

namespace {

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "octomap_insert: %s\n", msg.c_str());
  std::exit(2);
}

[[noreturn]] void usage() {
  fail("usage: octomap_insert POINTS_FILE [--res 0.2] [--out-occupied FILE] [--count-updates]");
}

// Streams the frames of a points file; every read is bounds-checked against
// the file size so that a corrupt count cannot trigger a huge allocation.
class PointsReader {
 public:
  explicit PointsReader(const std::string& path) : path_(path) {
    in_.open(path, std::ios::binary);
    if (!in_) fail("cannot open points file " + path);
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    if (end < 0) fail("cannot read points file " + path);
    size_ = static_cast<uint64_t>(end);
    validate();
    rewind();
  }

  // Back to the first frame (after the header). Returns the frame count.
  uint32_t rewind() {
    in_.clear();
    in_.seekg(0, std::ios::beg);
    pos_ = 0;
    char magic[8];
    read(magic, 8, "header");
    static const char kMagic[8] = {'R', 'V', 'X', 'P', 'T', 'S', '1', '\0'};
    if (std::memcmp(magic, kMagic, 8) != 0)
      fail("bad magic in points file " + path_ + " (expected \"RVXPTS1\\0\")");
    read(&frames_, 4, "header");
    frame_ = 0;
    return frames_;
  }

  uint32_t frames() const { return frames_; }

  // Walks the frame headers so that a bad file fails before minutes of
  // insertion rather than after.
  void validate() {
    rewind();
    for (uint32_t f = 0; f < frames_; ++f) {
      const std::string what = "frame " + std::to_string(f);
      double o[3];
      read(o, sizeof o, what + " origin");
      uint32_t n = 0;
      read(&n, 4, what + " point count");
      const uint64_t bytes = uint64_t(n) * 12;
      if (bytes > size_ - pos_)
        fail("truncated points file " + path_ + ": " + what + " declares " + std::to_string(n) +
             " points but only " + std::to_string(size_ - pos_) + " bytes remain");
      in_.seekg(std::streamoff(bytes), std::ios::cur);
      pos_ += bytes;
    }
    if (pos_ != size_)
      fail("points file " + path_ + ": " + std::to_string(size_ - pos_) +
           " trailing bytes after frame " + std::to_string(frames_));
  }

  // Reads the next frame into origin/cloud; false after the last frame.
  bool next(octomap::point3d& origin, octomap::Pointcloud& cloud) {
    if (frame_ == frames_) {
      if (pos_ != size_)
        fail("points file " + path_ + ": " + std::to_string(size_ - pos_) +
             " trailing bytes after frame " + std::to_string(frames_));
      return false;
    }
    const std::string what = "frame " + std::to_string(frame_);
    double o[3];
    read(o, sizeof o, what + " origin");
    uint32_t n = 0;
    read(&n, 4, what + " point count");
    const uint64_t bytes = uint64_t(n) * 12;
    if (bytes > size_ - pos_)
      fail("truncated points file " + path_ + ": " + what + " declares " + std::to_string(n) +
           " points but only " + std::to_string(size_ - pos_) + " bytes remain");
    buf_.resize(size_t(n) * 3);
    read(buf_.data(), bytes, what + " points");
    origin = octomap::point3d(float(o[0]), float(o[1]), float(o[2]));
    cloud.clear();
    cloud.reserve(n);
    for (size_t i = 0; i < n; ++i) cloud.push_back(buf_[3 * i], buf_[3 * i + 1], buf_[3 * i + 2]);
    ++frame_;
    return true;
  }

 private:
  void read(void* dst, uint64_t bytes, const std::string& what) {
    if (bytes > size_ - pos_)
      fail("truncated points file " + path_ + " (reading " + what + " at byte " +
           std::to_string(pos_) + " of " + std::to_string(size_) + ")");
    in_.read(static_cast<char*>(dst), std::streamsize(bytes));
    if (!in_) fail("read error in points file " + path_ + " (" + what + ")");
    pos_ += bytes;
  }

  std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0, pos_ = 0;
  uint32_t frames_ = 0, frame_ = 0;
  std::vector<float> buf_;
};

void configure(octomap::OcTree& tree) {
  // OctoMap's defaults, set explicitly so the comparison does not depend on them.
  tree.setProbHit(0.7);
  tree.setProbMiss(0.4);
  tree.setClampingThresMin(0.1192);
  tree.setClampingThresMax(0.971);
}

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char s[64];
  std::snprintf(s, sizeof s, "%.9g", v);
  return s;
}

// Centres of all occupied voxels at full depth: a pruned leaf at depth d
// stands for 2^(16-d) voxels per axis, all with the leaf's occupancy.
void write_occupied(octomap::OcTree& tree, std::ofstream& out, const std::string& path) {
  tree.updateInnerOccupancy();  // a no-op with lazy_eval = false; cheap insurance
  std::vector<float> xyz;
  const unsigned depth = tree.getTreeDepth();
  for (auto it = tree.begin_leafs(), end = tree.end_leafs(); it != end; ++it) {
    if (!tree.isNodeOccupied(*it)) continue;
    const unsigned level = depth - it.getDepth();
    const octomap::OcTreeKey base = it.getIndexKey();
    const unsigned span = 1u << level;
    for (unsigned i = 0; i < span; ++i)
      for (unsigned j = 0; j < span; ++j)
        for (unsigned k = 0; k < span; ++k) {
          octomap::OcTreeKey key(base[0] + i, base[1] + j, base[2] + k);
          const octomap::point3d c = tree.keyToCoord(key);
          xyz.push_back(c.x());
          xyz.push_back(c.y());
          xyz.push_back(c.z());
        }
  }
  const uint64_t count = xyz.size() / 3;
  if (count > UINT32_MAX) fail("too many occupied voxels for " + path);
  const uint32_t c32 = uint32_t(count);
  out.write(reinterpret_cast<const char*>(&c32), 4);
  out.write(reinterpret_cast<const char*>(xyz.data()), std::streamsize(xyz.size() * sizeof(float)));
  out.close();
  if (!out) fail("write error on occupied file " + path);
}

}  // namespace

int main(int argc, char** argv) {
  std::string points_path, occupied_path;
  double res = 0.2;
  bool count_updates = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--res") {
      if (++i == argc) usage();
      char* end = nullptr;
      res = std::strtod(argv[i], &end);
      if (end == argv[i] || *end != '\0' || !(res > 0.0) || !std::isfinite(res))
        fail(std::string("bad --res ") + argv[i]);
    } else if (a == "--out-occupied") {
      if (++i == argc) usage();
      occupied_path = argv[i];
    } else if (a == "--count-updates") {
      count_updates = true;
    } else if (a == "-h" || a == "--help") {
      usage();
    } else if (!a.empty() && a[0] == '-') {
      fail("unknown option " + a);
    } else if (points_path.empty()) {
      points_path = a;
    } else {
      usage();
    }
  }
  if (points_path.empty()) usage();

#ifdef _OPENMP
  omp_set_num_threads(1);  // before any OcTree exists (see the header comment)
#endif

  PointsReader reader(points_path);
  std::ofstream occupied_out;  // opened now so that a bad path fails before the run
  if (!occupied_path.empty()) {
    occupied_out.open(occupied_path, std::ios::binary | std::ios::trunc);
    if (!occupied_out) fail("cannot create occupied file " + occupied_path);
  }
  const uint32_t frames = reader.frames();

  octomap::OcTree tree(res);
  configure(tree);
  octomap::Pointcloud cloud;
  octomap::point3d origin;
  uint64_t points = 0;
  double insert_s = 0.0;
  while (reader.next(origin, cloud)) {
    points += cloud.size();
    const auto t0 = std::chrono::steady_clock::now();
    tree.insertPointCloud(cloud, origin, -1 /*maxrange*/, false /*lazy_eval*/, false /*discretize*/);
    const auto t1 = std::chrono::steady_clock::now();
    insert_s += std::chrono::duration<double>(t1 - t0).count();
  }

  const size_t leafs = tree.getNumLeafNodes();
  const size_t memory = tree.memoryUsage();

  std::string updates_json = "null", updates_rate_json = "null";
  if (count_updates) {
    octomap::OcTree fresh(res);
    configure(fresh);
    reader.rewind();
    uint64_t updates = 0;
    octomap::KeySet free_cells, occupied_cells;
    while (reader.next(origin, cloud)) {
      free_cells.clear();
      occupied_cells.clear();
      fresh.computeUpdate(cloud, origin, free_cells, occupied_cells, -1);
      updates += free_cells.size() + occupied_cells.size();
    }
    updates_json = std::to_string(updates);
    updates_rate_json = insert_s > 0 ? num(double(updates) / insert_s) : "null";
  }

  if (!occupied_path.empty()) write_occupied(tree, occupied_out, occupied_path);

  std::printf(
      "{\"tool\":\"octomap\",\"version\":\"%s\",\"res\":%s,\"frames\":%u,\"points\":%llu,"
      "\"insert_s\":%s,\"points_per_s\":%s,\"updates\":%s,\"updates_per_s\":%s,"
      "\"ms_per_frame\":%s,\"leafs\":%zu,\"memory_bytes\":%zu}\n",
      kOctomapVersion, num(res).c_str(), frames, (unsigned long long)points, num(insert_s).c_str(),
      insert_s > 0 ? num(double(points) / insert_s).c_str() : "null", updates_json.c_str(),
      updates_rate_json.c_str(), frames > 0 ? num(insert_s * 1e3 / frames).c_str() : "null",
      leafs, memory);
  // Skip tearing the tree down: freeing tens of millions of nodes one by one
  // takes seconds (~6 s for 16M leaves here) and measures nothing.
  std::fflush(stdout);
  std::_Exit(std::ferror(stdout) ? 2 : 0);
}
