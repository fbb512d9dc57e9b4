// Loads the TOML configuration against the schema, collecting every error with its position.
#include "daemon/config.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"
#include "policy/domain_list.hpp"
#include "storage/redis_url.hpp"

namespace calloutd {

namespace {

constexpr std::uintmax_t kMaxDomainListBytes = std::uintmax_t{64} << 20;

class Loader {
  public:
    explicit Loader(std::string path) : path_(std::move(path)) {}

    ConfigResult load(std::string_view text) {
        toml::table root;
        try {
            root = toml::parse(text, path_);
        } catch (const toml::parse_error& e) {
            error_at(e.source(), std::string(e.description()));
            return errors_;
        }
        Config cfg;
        cfg.path = path_;
        walk(root, "");
        for (const auto& def : config_schema()) {
            const toml::node* node = node_at(root, def.key);
            std::optional<ConfigValue> v;
            if (node == nullptr) {
                v = default_value(def);
            } else {
                std::string why;
                v = parse_value(def, *node, &why);
                if (!v) {
                    error_at(node->source(), why);
                    continue;
                }
            }
            if (def.kind == ValueKind::domain_list && !expand_domain_lists(*v, node, root))
                continue;
            def.apply(cfg, std::move(*v));
        }
        if (errors_.empty()) check_relations(cfg, root);
        if (!errors_.empty()) return errors_;
        return cfg;
    }

  private:
    void error_at(const toml::source_region& where, const std::string& msg) {
        std::ostringstream out;
        out << path_ << ':' << where.begin.line << ':' << where.begin.column << ": " << msg;
        errors_.push_back(out.str());
    }

    // The value of a schema key ("section.name"), found table by table. Not at_path(): the
    // walk below checks names one table at a time, so the lookup must see the same structure.
    static const toml::node* node_at(const toml::table& root, std::string_view key) {
        const toml::table* table = &root;
        for (;;) {
            auto dot = key.find('.');
            const toml::node* node = table->get(key.substr(0, dot));
            if (node == nullptr || dot == std::string_view::npos) return node;
            table = node->as_table();
            if (table == nullptr) return nullptr;
            key.remove_prefix(dot + 1);
        }
    }

    // Every key in the file must be a schema key or a section that contains schema keys.
    void walk(const toml::table& table, const std::string& prefix) {
        for (const auto& [name, node] : table) {
            // A quoted name with a dot ("server.listen" = ...) is one TOML key, not a section
            // and a key: it names nothing in the schema, so it is refused, never ignored.
            if (name.str().find('.') != std::string_view::npos) {
                error_at(name.source().begin.line != 0 ? name.source() : node.source(),
                         "unknown key '" + prefix + "\"" + std::string(name.str()) +
                             "\"' (a quoted name is one key; write [section] and name = ...)");
                continue;
            }
            std::string key = prefix + std::string(name.str());
            if (find_key(key) != nullptr) continue;
            if (const auto* sub = node.as_table(); sub != nullptr && is_section(key)) {
                walk(*sub, key + ".");
                continue;
            }
            error_at(name.source().begin.line != 0 ? name.source() : node.source(),
                     (is_section(key) ? "section [" + key + "] must be a table"
                                      : "unknown key '" + key + "'"));
        }
    }

    static bool is_section(const std::string& key) {
        for (const auto& def : config_schema()) {
            if (def.key.starts_with(key + ".")) return true;
        }
        return false;
    }

    // Replaces "builtin:..." and "file:PATH" entries by the domains they list.
    bool expand_domain_lists(ConfigValue& value, const toml::node* node, const toml::table& root) {
        auto& entries = std::get<std::vector<std::string>>(value);
        std::vector<std::string> out;
        const toml::array* arr = node != nullptr ? node->as_array() : nullptr;
        bool ok = true;
        for (size_t i = 0; i < entries.size(); ++i) {
            const std::string& e = entries[i];
            auto where = arr != nullptr && i < arr->size() ? (*arr)[i].source() : root.source();
            std::string text;
            std::string origin = e;
            if (auto builtin = builtin_list(e)) {
                text = std::string(*builtin);
            } else if (e.starts_with("file:")) {
                std::filesystem::path file(e.substr(5));
                if (file.is_relative()) file = std::filesystem::path(path_).parent_path() / file;
                // Only a regular file of sane size: "file:/dev/zero" or a FIFO must not hang
                // check-config or a reload.
                std::error_code ec;
                auto st = std::filesystem::status(file, ec);
                if (!ec && st.type() != std::filesystem::file_type::regular) {
                    error_at(where, "domain list " + file.string() + " is not a regular file");
                    ok = false;
                    continue;
                }
                auto bytes = std::filesystem::file_size(file, ec);
                if (!ec && bytes > kMaxDomainListBytes) {
                    error_at(where, "domain list " + file.string() + " is larger than " +
                                        std::to_string(kMaxDomainListBytes >> 20) + " MiB");
                    ok = false;
                    continue;
                }
                std::ifstream in(file, std::ios::binary);
                if (!in) {
                    error_at(where, "cannot read domain list " + file.string());
                    ok = false;
                    continue;
                }
                std::ostringstream content;
                content << in.rdbuf();
                text = content.str();
                origin = file.string();
            } else {
                out.push_back(e);
                continue;
            }
            std::string why;
            auto domains = parse_domain_list(text, &why);
            if (!domains) {
                error_at(where, origin + ": " + why);
                ok = false;
                continue;
            }
            out.insert(out.end(), domains->begin(), domains->end());
        }
        entries = std::move(out);
        return ok;
    }

    // Rules that involve two keys; reported at the second key, or at the top of the file.
    void check_relations(const Config& cfg, const toml::table& root) {
        auto where = [&](std::string_view key) {
            const toml::node* n = node_at(root, key);
            return n != nullptr ? n->source() : root.source();
        };
        if (!cfg.redis.url.empty()) {
            std::string why;
            if (!parse_redis_url(cfg.redis.url, why)) error_at(where("redis.url"), why);
        }
        for (const auto& sentinel : cfg.redis.sentinels) {
            std::string why;
            if (!parse_sentinel_address(sentinel, why)) error_at(where("redis.sentinels"), why);
        }
        if (!cfg.redis.sentinels.empty()) {
            if (cfg.redis.master_name.empty()) {
                error_at(where("redis.sentinels"), "redis.sentinels needs redis.master_name");
            }
            if (!cfg.redis.url.starts_with("redis://")) {
                error_at(where("redis.sentinels"),
                         "redis.sentinels needs redis.url = \"redis://[:PASSWORD@]sentinel/DB\" "
                         "(its host is ignored)");
            }
        }
        const std::string& control = cfg.server.control_socket;
        if (!control.empty() && (!control.starts_with("/") || control.size() > 107)) {
            error_at(where("server.control_socket"),
                     "server.control_socket must be an absolute path of at most 107 bytes, or "
                     "\"\"");
        }
        if (!cfg.metrics.listen.empty()) {
            std::string why;
            if (!parse_listen_address(cfg.metrics.listen, &why)) {
                error_at(where("metrics.listen"), "metrics.listen: " + why);
            }
        }
        if (cfg.server.max_line_bytes > cfg.server.max_request_bytes) {
            error_at(where("server.max_line_bytes"),
                     "server.max_line_bytes must not exceed server.max_request_bytes");
        }
        if (cfg.cache.positive_refresh > cfg.cache.positive_ttl) {
            error_at(where("cache.positive_refresh"),
                     "cache.positive_refresh must not exceed cache.positive_ttl");
        }
        if (cfg.callout.connect_timeout > cfg.callout.probe_timeout ||
            cfg.callout.command_timeout > cfg.callout.probe_timeout) {
            error_at(where("callout.probe_timeout"),
                     "callout.probe_timeout must be at least callout.connect_timeout and "
                     "callout.command_timeout");
        }
    }

    std::string path_;
    std::vector<std::string> errors_;
};

}  // namespace

ConfigResult load_config_text(std::string_view toml_text, const std::string& path) {
    return Loader(path).load(toml_text);
}

ConfigResult load_config_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::vector<std::string>{path + ":0:0: cannot read the file"};
    std::ostringstream text;
    text << in.rdbuf();
    return load_config_text(text.str(), path);
}

}  // namespace calloutd
