// One hiredis async context on a libuv loop: the event glue, and the one place that decides
// when a context may be freed.
//
// Written for hiredis 0.14 (Debian 12's libhiredis0.14), whose defects it works around:
//  1. Its libuv adapter ignores poll errors. On POLLERR (a connection reset with unread data, a
//     refused non-blocking connect) libuv stops the poll handle and calls back with UV_EBADF;
//     0.14's redisLibuvPoll() returns on any non-zero status, so the context hangs silently until
//     some deadline expires. Here an error lets hiredis read the socket, which surfaces the real
//     errno (ECONNRESET, ECONNREFUSED) and tears the context down. Fixed in hiredis 1.0.
//  2. Freeing a context from inside its connect or disconnect callback is a use-after-free: 0.14
//     guards only reply callbacks with REDIS_IN_CALLBACK (fixed in hiredis 1.1). And 0.14 frees a
//     context itself after an I/O error, which the owner must not do again (1.0 can be told not
//     to, REDIS_OPT_NOAUTOFREE). Here the owner destroys its UvHiredis whenever it likes, from
//     inside an event too: the context is freed once hiredis has returned, or not at all if
//     hiredis is freeing it already.
// With hiredis >= 1.1 this file can go: <hiredis/adapters/libuv.h> and redisAsyncFree() from any
// callback do the same. What would remain is small enough for the owner: hiredis reports the end
// of a context up to three ways (the connect callback with an error, a NULL reply for every
// pending command, the disconnect callback), which this glue turns into exactly one event; and a
// failed connect's error text is in ac->c.errstr, since 0.14 and 1.0 copy it into ac->errstr only
// after the connect callback has run.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace calloutd {

class UvHiredis {
  public:
    // What the owner hears, always from inside hiredis (a libuv poll callback). A handler may
    // send commands, open other connections, or destroy this UvHiredis.
    class Events {
      public:
        virtual void on_connected() = 0;
        virtual void on_reply(std::uint64_t tag, const redisReply& reply) = 0;
        // The end, heard at most once, and nothing after it: the non-blocking connect failed, or
        // the connection was lost (read or write error, EOF). hiredis frees the context itself.
        virtual void on_connect_failed(const std::string& error) = 0;
        virtual void on_lost(const std::string& error) = 0;

      protected:
        ~Events() = default;
    };

    // Starts a non-blocking connect to an IP literal (hiredis 0.14 would resolve a name with a
    // blocking getaddrinfo) or to a unix socket path. nullptr, with `error` set, when hiredis
    // refuses at once.
    static std::unique_ptr<UvHiredis> connect_tcp(uv_loop_t* loop, const std::string& ip, int port,
                                                  Events& events, std::string& error);
    static std::unique_ptr<UvHiredis> connect_unix(uv_loop_t* loop, const std::string& path,
                                                   Events& events, std::string& error);

    // Lets go of the context: no event reaches the owner from now on. Allowed from inside an
    // event. The loop must run once more afterwards so libuv can close the poll handle.
    ~UvHiredis();
    UvHiredis(const UvHiredis&) = delete;
    UvHiredis& operator=(const UvHiredis&) = delete;

    // Queues one command (binary-safe arguments, copied before this returns); its reply is
    // reported with `tag`. False when the context is closing or gone.
    bool send(const std::vector<std::string_view>& args, std::uint64_t tag);

    struct Glue;
    // Constructible only through connect_*(); the key keeps the constructor out of reach.
    class Key {
        friend class UvHiredis;
        Key() = default;
    };
    UvHiredis(Key, Glue* glue) : glue_(glue) {}

  private:
    Glue* glue_;  // outlives this object until libuv has closed the poll handle
};

}  // namespace calloutd
