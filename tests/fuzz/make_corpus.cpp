// Writes the seed corpus of outbox_fuzz_log_reader into the directory named on the command line:
// segment files written by a real outbox::file_storage (appends, claims, every kind of outcome,
// entity creates, updates, replacements and drops, a reset, a purge, a compaction), each also
// in the target's second form, the list of its record bodies ([u16 length][body]...).
#include <outbox/storage/file.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;
namespace wire = outbox::detail::log;
using namespace std::chrono_literals;

const outbox::timestamp t0 = outbox::timestamp(std::chrono::seconds(1767225600));

template <class T>
T must(outbox::result<T> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "make_corpus: %s: %s\n", what, r.error().what().c_str());
    std::exit(1);
  }
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

class builder {
 public:
  explicit builder(const fs::path& dir) : storage_(must(outbox::file_storage::open(dir, fast()), "open")) {}

  outbox::event make(std::string user, std::string key, int priority = outbox::priority::normal) {
    outbox::event e;
    e.id = ids_.next(t0);
    e.type = "steps.hourly.created";
    e.entity_id = key;
    e.ordering_key = std::move(key);
    e.user_id = std::move(user);
    e.payload = R"({"steps":)" + std::to_string(++made_) + "}";
    e.priority = priority;
    e.created_at = t0;
    e.updated_at = t0;
    return e;
  }
  void append(std::vector<outbox::event> batch) { must(storage_.append(std::span<outbox::event>(batch)), "append"); }
  std::vector<outbox::event> claim(std::string_view user, outbox::timestamp at, std::size_t limit) {
    std::vector<outbox::event> out;
    must(storage_.claim({user, at, at + 60s, limit}, out), "claim");
    return out;
  }
  void record(const outbox::event& e, outbox::status to, outbox::timestamp at) {
    outbox::outcome o;
    o.id = e.id;
    o.lease = e.lease;
    o.to = to;
    o.attempts = to == outbox::status::pending ? e.attempts - 1 : e.attempts;
    o.at = at;
    o.retry_after = at + 30s;
    o.error = to == outbox::status::completed ? "" : "503";
    o.remote_id = to == outbox::status::completed ? "remote-" + e.entity_id : "";
    must(storage_.record(std::span<outbox::outcome>(&o, 1)), "record");
  }
  outbox::entity_change create(std::string id, std::string user, std::string natural_key) {
    outbox::entity_change c;
    c.event = make(user, "steps/" + id);
    c.event.entity_type = "steps";
    c.event.entity_id = id;
    c.entity.collection = "steps";
    c.entity.id = std::move(id);
    c.entity.user_id = std::move(user);
    c.entity.natural_key = std::move(natural_key);
    c.entity.payload = R"({"count":)" + std::to_string(++made_) + "}";
    c.entity.occurred_at = t0;
    c.entity.created_at = t0;
    c.entity.updated_at = t0;
    c.entity.last_event = c.event.id;
    must(storage_.commit(c), "commit");
    return c;
  }
  outbox::entity_record row(std::string_view id) {
    auto found = must(storage_.find_entity("steps", id), "find_entity");
    if (!found) std::exit(1);
    return *found;
  }
  outbox::file_storage& storage() { return storage_; }

 private:
  static outbox::file_options fast() {
    outbox::file_options o;
    o.sync = outbox::file_options::sync_policy::none;
    return o;
  }
  outbox::event_id_generator ids_{7};
  int made_ = 0;
  outbox::file_storage storage_;
};

std::string read(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write(const fs::path& file, std::string_view bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "make_corpus: cannot write %s\n", file.c_str());
    std::exit(1);
  }
}

/// The segment's records as the fuzz target's second input form.
std::string bodies_of(std::string_view segment) {
  std::string out;
  for (std::size_t pos = wire::header_size; pos < segment.size();) {
    std::string_view body;
    auto end = wire::frame_end(segment, pos, &body);
    if (!end) break;
    out.push_back(static_cast<char>(body.size() & 0xFF));
    out.push_back(static_cast<char>(body.size() >> 8));
    out.append(body);
    pos = *end;
  }
  return out;
}

/// Every segment file of `dir`, and its bodies form, into `out` as "<name>-<n>".
void harvest(const fs::path& dir, const fs::path& out, const std::string& name) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".log") continue;
    const std::string bytes = read(entry.path());
    write(out / (name + "-segment-" + std::to_string(n)), bytes);
    write(out / (name + "-bodies-" + std::to_string(n)), bodies_of(bytes));
    ++n;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out);
  const fs::path work = fs::temp_directory_path() / ("outbox-fuzz-corpus-" + std::to_string(::getpid()));
  fs::remove_all(work);

  {  // events only: appends, claims and every outcome
    builder b(work / "events");
    auto first = b.make("alice", "a");
    first.payload = std::string("\0\x01\x02\xff binary", 11);
    b.append({first, b.make("alice", "b"), b.make("bob", "x", outbox::priority::high)});
    auto claimed = b.claim("alice", t0 + 1s, 2);
    b.record(claimed[0], outbox::status::completed, t0 + 2s);
    b.record(claimed[1], outbox::status::failed, t0 + 2s);
    auto bob = b.claim("bob", t0 + 3s, 1);
    b.record(bob[0], outbox::status::dead, t0 + 4s);
    const outbox::event_id dead = bob[0].id;
    must(b.storage().reset(std::span<const outbox::event_id>(&dead, 1), t0 + 5s), "reset");
    must(b.storage().purge_completed(t0 + 1h), "purge");
    b.claim("bob", t0 + 6s, 1);
  }
  harvest(work / "events", out, "events");

  {  // entities: create, update, replace, write-back, drop; then a compaction
    builder b(work / "entities");
    b.create("s1", "alice", "2026-01-01T00");
    auto update = b.row("s1");
    {
      outbox::entity_change c;
      c.entity = update;
      c.expected_version = update.version;
      c.entity.payload = R"({"count":99})";
      c.op = outbox::entity_change::event_op::append;
      c.event = b.make("alice", "steps/s1");
      c.event.entity_type = "steps";
      c.event.entity_id = "s1";
      c.entity.last_event = c.event.id;
      must(b.storage().commit(c), "update");
      outbox::entity_change r;
      r.entity = b.row("s1");
      r.expected_version = r.entity.version;
      r.entity.payload = R"({"count":100})";
      r.op = outbox::entity_change::event_op::replace;
      r.target = c.event.id;
      r.event.type = "steps.hourly.updated";
      r.event.payload = r.entity.payload;
      must(b.storage().commit(r), "replace");
    }
    auto s2 = b.create("s2", "bob", "2026-01-01T01");
    auto claimed = b.claim("bob", t0 + 1s, 1);
    b.record(claimed[0], outbox::status::completed, t0 + 2s);  // written back onto s2
    auto s3 = b.create("s3", "alice", "");
    outbox::entity_change drop;
    drop.entity = b.row("s3");
    drop.expected_version = drop.entity.version;
    drop.erase = true;
    drop.op = outbox::entity_change::event_op::drop;
    drop.target = s3.event.id;
    must(b.storage().commit(drop), "drop");
    harvest(work / "entities", out, "entities");
    must(b.storage().compact(), "compact");  // a segment that starts with a snapshot
  }
  harvest(work / "entities", out, "compacted");

  fs::remove_all(work);
  return 0;
}
