// Loads the TOML configuration against the schema, collecting every error with its position.
#include "daemon/config.hpp"

#include <fstream>
#include <sstream>

#include "daemon/config_schema.hpp"
#include "daemon/config_values.hpp"

namespace calloutd {

namespace {

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
            const toml::node* node = root.at_path(def.key).node();
            if (node == nullptr) {
                def.apply(cfg, default_value(def));
                continue;
            }
            std::string why;
            auto v = parse_value(def, *node, &why);
            if (!v) {
                error_at(node->source(), why);
                continue;
            }
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

    // Every key in the file must be a schema key or a section that contains schema keys.
    void walk(const toml::table& table, const std::string& prefix) {
        for (const auto& [name, node] : table) {
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

    // Rules that involve two keys; reported at the second key, or at the top of the file.
    void check_relations(const Config& cfg, const toml::table& root) {
        auto where = [&](std::string_view key) {
            const toml::node* n = root.at_path(key).node();
            return n != nullptr ? n->source() : root.source();
        };
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
