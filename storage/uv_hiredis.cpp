// UvHiredis: hiredis 0.14's event hooks on a uv_poll_t, and deferred freeing of the context.
#include "storage/uv_hiredis.hpp"

#include "storage/redis_reply.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <utility>

namespace calloutd {

namespace {

// hiredis carries one void* per command: ours is the owner's tag.
void* tag_to_privdata(std::uint64_t tag) {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag));
}
std::uint64_t privdata_to_tag(void* privdata) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(privdata));
}

// hiredis 0.14 copies the error into ac->err only after the connect callback, so a refused
// connect is read from the inner context.
std::string error_text(const redisAsyncContext* ac) {
    if (ac->err != 0 && ac->errstr != nullptr && ac->errstr[0] != '\0') return ac->errstr;
    if (ac->c.err != 0 && ac->c.errstr[0] != '\0') return ac->c.errstr;
    return "connection closed";
}

}  // namespace

// Shared by the UvHiredis, the poll handle and the hiredis context (ac->data and ac->ev.data),
// and freed when the first is gone and the second closed, whichever comes last.
struct UvHiredis::Glue {
    uv_poll_t poll{};
    redisAsyncContext* ac = nullptr;  // cleared by the cleanup hook: hiredis is freeing it
    Events* events = nullptr;         // cleared when the owner lets go or hears the end
    int watching = 0;                 // UV_READABLE | UV_WRITABLE, as hiredis asked
    int dispatching = 0;              // > 0 while hiredis runs from the poll callback
    bool free_when_back = false;      // the owner let go while hiredis was on the stack
    bool owned = true;                // the UvHiredis still exists
    bool poll_open = false;           // from uv_poll_init until its close callback

    static Glue* of(const redisAsyncContext* ac) { return static_cast<Glue*>(ac->data); }
    static void release_if_unused(Glue* g) {
        if (!g->owned && !g->poll_open) std::unique_ptr<Glue> owned(g);
    }

    void watch(int events) {
        watching = events;
        if (events != 0) {
            uv_poll_start(&poll, events, &Glue::on_poll);
        } else {
            uv_poll_stop(&poll);
        }
    }

    // The end of the context, told to the owner once; hiredis's later callbacks find no owner.
    void end(bool connecting, const std::string& error) {
        Events* owner = std::exchange(events, nullptr);
        if (owner == nullptr) return;
        if (connecting) {
            owner->on_connect_failed(error);
        } else {
            owner->on_lost(error);
        }
    }

    static void on_poll(uv_poll_t* handle, int status, int ready) {
        auto* g = static_cast<Glue*>(handle->data);
        // libuv stopped the handle on the error: let hiredis find out what happened.
        if (status < 0) ready = UV_READABLE | (g->watching & UV_WRITABLE);
        ++g->dispatching;
        if (g->ac != nullptr && (ready & UV_READABLE)) redisAsyncHandleRead(g->ac);
        if (g->ac != nullptr && !g->free_when_back && (ready & UV_WRITABLE)) {
            redisAsyncHandleWrite(g->ac);
        }
        --g->dispatching;
        // hiredis is off the stack now. (g itself lives until the poll handle's close callback,
        // which never runs from inside this one.)
        if (g->free_when_back && g->ac != nullptr) {
            g->free_when_back = false;
            redisAsyncFree(g->ac);  // runs the cleanup hook, which closes the poll handle
            return;
        }
        if (status < 0 && g->ac != nullptr) g->watch(g->watching);
    }

    static void on_connect(const redisAsyncContext* ac, int status) {
        Glue* g = of(ac);
        if (status != REDIS_OK) {
            g->end(true, error_text(ac));  // hiredis frees the context when this returns
        } else if (g->events != nullptr) {
            g->events->on_connected();
        }
    }

    static void on_disconnect(const redisAsyncContext* ac, int /*status*/) {
        of(ac)->end(false, error_text(ac));
    }

    // A NULL reply means the context is being freed: by hiredis after an error, or by us.
    static void on_reply(redisAsyncContext* ac, void* reply, void* privdata) {
        Glue* g = of(ac);
        if (reply == nullptr) {
            g->end(false, error_text(ac));
        } else if (g->events != nullptr) {
            g->events->on_reply(privdata_to_tag(privdata), *static_cast<redisReply*>(reply));
        }
    }

    static std::unique_ptr<UvHiredis> attach(redisAsyncContext* ac, uv_loop_t* loop, Events& events,
                                             std::string& error);
};

// Hooks the context to a fresh poll handle. The hooks are set before any callback, so every
// hiredis callback finds the glue in ac->data.
std::unique_ptr<UvHiredis> UvHiredis::Glue::attach(redisAsyncContext* ac, uv_loop_t* loop,
                                                   Events& events, std::string& error) {
    if (ac == nullptr) {
        error = "out of memory";
        return nullptr;
    }
    if (ac->err != 0) {
        error = error_text(ac);
        redisAsyncFree(ac);  // no event hooks or callbacks yet: freed at once, nothing called
        return nullptr;
    }
    bound_reply_arrays(ac->c.reader);
    auto g = std::make_unique<Glue>();
    if (uv_poll_init(loop, &g->poll, ac->c.fd) != 0) {
        error = "cannot attach to the event loop";
        redisAsyncFree(ac);
        return nullptr;
    }
    g->poll_open = true;
    g->poll.data = g.get();
    g->ac = ac;
    g->events = &events;
    ac->data = g.get();
    ac->ev.data = g.get();
    ac->ev.addRead = [](void* d) {
        auto* glue = static_cast<Glue*>(d);
        glue->watch(glue->watching | UV_READABLE);
    };
    ac->ev.delRead = [](void* d) {
        auto* glue = static_cast<Glue*>(d);
        glue->watch(glue->watching & ~UV_READABLE);
    };
    ac->ev.addWrite = [](void* d) {
        auto* glue = static_cast<Glue*>(d);
        glue->watch(glue->watching | UV_WRITABLE);
    };
    ac->ev.delWrite = [](void* d) {
        auto* glue = static_cast<Glue*>(d);
        glue->watch(glue->watching & ~UV_WRITABLE);
    };
    ac->ev.cleanup = [](void* d) {
        auto* glue = static_cast<Glue*>(d);
        glue->ac = nullptr;
        auto* handle = reinterpret_cast<uv_handle_t*>(&glue->poll);
        if (uv_is_closing(handle)) return;
        uv_close(handle, [](uv_handle_t* closed) {
            auto* done = static_cast<Glue*>(closed->data);
            done->poll_open = false;
            release_if_unused(done);
        });
    };
    redisAsyncSetConnectCallback(ac, &Glue::on_connect);  // also asks for the first write event
    redisAsyncSetDisconnectCallback(ac, &Glue::on_disconnect);
    return std::make_unique<UvHiredis>(Key{}, g.release());
}

std::unique_ptr<UvHiredis> UvHiredis::connect_tcp(uv_loop_t* loop, const std::string& ip, int port,
                                                  Events& events, std::string& error) {
    return Glue::attach(redisAsyncConnect(ip.c_str(), port), loop, events, error);
}

std::unique_ptr<UvHiredis> UvHiredis::connect_unix(uv_loop_t* loop, const std::string& path,
                                                   Events& events, std::string& error) {
    return Glue::attach(redisAsyncConnectUnix(path.c_str()), loop, events, error);
}

UvHiredis::~UvHiredis() {
    Glue* g = glue_;
    g->events = nullptr;
    g->owned = false;
    if (g->ac != nullptr) {
        if (g->dispatching > 0) {
            g->free_when_back = true;  // on_poll frees it once hiredis has returned
        } else {
            // hiredis runs the pending callbacks with NULL replies (they find no owner), then
            // the cleanup hook, which closes the poll handle.
            redisAsyncFree(g->ac);
        }
    }
    Glue::release_if_unused(g);
}

bool UvHiredis::send(const std::vector<std::string_view>& args, std::uint64_t tag) {
    Glue* g = glue_;
    if (g->ac == nullptr || g->events == nullptr) return false;
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (auto a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    return redisAsyncCommandArgv(g->ac, &Glue::on_reply, tag_to_privdata(tag),
                                 static_cast<int>(args.size()), argv.data(),
                                 lens.data()) == REDIS_OK;
}

}  // namespace calloutd
