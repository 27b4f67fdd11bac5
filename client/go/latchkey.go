// Package latchkey is a Go client for latchkeyd, the password-reset and credential daemon,
// over its Unix socket. Standard library only.
//
//	client := latchkey.New("/run/latchkeyd/latchkeyd.sock", latchkey.Options{})
//	defer client.Close()
//	user, err := client.VerifyPassword(ctx, email, password, clientIP)
//	if errors.Is(err, latchkey.ErrInvalidCredentials) { ... }
//
// A Client is safe for concurrent use: calls share one connection and run concurrently on
// it, each answer matched to its call by id. It connects on the first call and again after
// the daemon closes the connection (it closes idle ones; it restarts). Every call takes a
// context: its deadline (or Options.Timeout) is sent as the call's deadline, and a
// cancelled context cancels the call on the daemon too.
//
// Errors: *APIError for the daemon's typed refusals (compare with errors.Is against
// ErrInvalidCredentials, ErrRateLimited, ...); *ServerError when the daemon did not run the
// call (ErrThrottled, ErrUnknownMethod, ErrInvalidRequest, ErrNoRole); ErrDisconnected when
// the connection ended before the answer (the call may or may not have run); an error
// wrapping context.DeadlineExceeded or context.Canceled when the context ended first (the
// call may or may not have run); *ConnectError when the socket cannot be reached. The client
// never retries a call on its own: some are not idempotent.
//
// The wire format is docs/PROTOCOL.md of the latchkey repository; this client speaks
// protocol 2.
package latchkey

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Protocol is the protocol version this client speaks.
const Protocol = 2

// Options configure a Client; the zero value takes every default.
type Options struct {
	// Timeout is each call's deadline when its context has none (default 10 s). Calls that
	// hash a password queue behind each other on a busy daemon: keep it generous.
	Timeout time.Duration
	// ConnectTimeout bounds each connection attempt (default 5 s).
	ConnectTimeout time.Duration
	// MaxFrameBytes is the largest frame sent or accepted (default 65536, the daemon's
	// server.max_frame_bytes).
	MaxFrameBytes int
}

// Client is a connection to latchkeyd, made on the first call and again when it is lost.
type Client struct {
	path string
	opts Options

	mu     sync.Mutex // guards conn and closed
	conn   *conn
	closed bool
}

// conn is one connection: a reader goroutine hands each answer to its waiting call.
type conn struct {
	net  net.Conn
	wmu  sync.Mutex // one frame written at a time
	mu   sync.Mutex // guards pending, nextID, dead
	next uint64
	// pending holds the calls waiting for an answer, by request id.
	pending map[uint64]chan answer
	// dead is why the connection ended; nil while it serves.
	dead error
	max  int
	// heard is whether the daemon sent anything (guarded by mu): a close before that is most
	// likely a refusal.
	heard bool
}

// answer is a call's outcome as the reader found it.
type answer struct {
	message json.RawMessage
	err     error
}

// New returns a client for the socket at path; nothing is connected until the first call.
func New(path string, opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 65536
	}
	return &Client{path: path, opts: opts}
}

// Close closes the connection; calls in flight fail with ErrDisconnected and later calls
// with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		c.conn.fail(ErrDisconnected)
		c.conn = nil
	}
	return nil
}

// connection returns the live connection, connecting if there is none.
func (c *Client) connection(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.conn != nil && c.conn.alive() {
		return c.conn, nil
	}
	dialer := net.Dialer{Timeout: c.opts.ConnectTimeout}
	raw, err := dialer.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, &ConnectError{Path: c.path, Err: err}
	}
	cn := &conn{net: raw, pending: map[uint64]chan answer{}, next: 1, max: c.opts.MaxFrameBytes}
	go cn.read()
	c.conn = cn
	return cn, nil
}

func (cn *conn) alive() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dead == nil
}

// fail ends the connection: every waiting call gets err.
func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.dead == nil {
		cn.dead = err
	}
	pending := cn.pending
	cn.pending = map[uint64]chan answer{}
	cn.mu.Unlock()
	_ = cn.net.Close()
	for _, ch := range pending {
		ch <- answer{err: err}
	}
}

// read hands each answer frame to its call until the connection ends.
func (cn *conn) read() {
	var head [4]byte
	for {
		if _, err := io.ReadFull(cn.net, head[:]); err != nil {
			cn.mu.Lock()
			heard := cn.heard
			cn.mu.Unlock()
			if !heard {
				cn.fail(fmt.Errorf("%w: %s", ErrDisconnected, closedUnanswered))
				return
			}
			cn.fail(fmt.Errorf("%w: %v", ErrDisconnected, err))
			return
		}
		cn.mu.Lock()
		cn.heard = true
		cn.mu.Unlock()
		n := binary.BigEndian.Uint32(head[:])
		if int64(n) > int64(cn.max) {
			cn.fail(fmt.Errorf("%w: the daemon sent a %d-byte frame, above the %d-byte limit", ErrDisconnected, n, cn.max))
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(cn.net, body); err != nil {
			cn.fail(fmt.Errorf("%w: %v", ErrDisconnected, err))
			return
		}
		var frame struct {
			RequestID uint64          `json:"request_id"`
			Message   json.RawMessage `json:"message"`
		}
		if err := json.Unmarshal(body, &frame); err != nil {
			cn.fail(fmt.Errorf("%w: an unreadable frame from the daemon: %v", ErrDisconnected, err))
			return
		}
		cn.mu.Lock()
		ch, ok := cn.pending[frame.RequestID]
		delete(cn.pending, frame.RequestID)
		cn.mu.Unlock()
		if ok {
			ch <- answer{message: frame.Message}
		}
	}
}

// writeTimeout bounds one frame's write. It is not the call's deadline: a write cut off
// halfway would leave half a frame on the connection and end it for every call on it, so a
// short deadline is enforced while waiting for the answer instead.
const writeTimeout = 10 * time.Second

// write sends one frame, whole.
func (cn *conn) write(frame []byte) error {
	if len(frame) > cn.max {
		return fmt.Errorf("latchkey: the request is %d bytes, above the %d-byte frame limit", len(frame), cn.max)
	}
	out := make([]byte, 4+len(frame))
	binary.BigEndian.PutUint32(out, uint32(len(frame)))
	copy(out[4:], frame)
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.net.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := cn.net.Write(out); err != nil {
		why := fmt.Errorf("%w: %v", ErrDisconnected, err)
		cn.mu.Lock()
		heard := cn.heard
		cn.mu.Unlock()
		if !heard {
			why = fmt.Errorf("%w: %s", ErrDisconnected, closedUnanswered)
		}
		cn.fail(why)
		return why
	}
	return nil
}

// Call makes any call by its wire name ("VerifyPassword") with its arguments by their
// protocol names, and decodes the result into result (which may be nil): the escape hatch
// for methods without a wrapper.
func (c *Client) Call(ctx context.Context, method string, args any, result any) error {
	if args == nil {
		args = struct{}{}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.opts.Timeout)
	}
	if time.Until(deadline) <= 0 {
		// Nothing sent: the connection stays as it was.
		return fmt.Errorf("%s: the deadline passed before the call was sent: %w", method, context.DeadlineExceeded)
	}
	cn, err := c.connection(ctx)
	if err != nil {
		return err
	}
	ch := make(chan answer, 1)
	cn.mu.Lock()
	if cn.dead != nil {
		cn.mu.Unlock()
		return fmt.Errorf("%s: %w", method, cn.dead)
	}
	id := cn.next
	cn.next++
	cn.pending[id] = ch
	cn.mu.Unlock()

	left := time.Until(deadline)
	if left < 0 {
		left = 0
	}
	request := map[string]any{"Request": map[string]any{
		"id": id,
		"context": map[string]any{"deadline": map[string]uint64{
			"secs": uint64(left / time.Second), "nanos": uint64(left % time.Second),
		}},
		"message": map[string]any{method: args},
	}}
	frame, err := json.Marshal(request)
	if err != nil {
		cn.forget(id)
		return fmt.Errorf("%s: cannot encode the arguments: %w", method, err)
	}
	if err := cn.write(frame); err != nil {
		cn.forget(id)
		return fmt.Errorf("%s: %w", method, err)
	}
	timer := time.NewTimer(left)
	defer timer.Stop()
	select {
	case got := <-ch:
		if got.err != nil {
			return fmt.Errorf("%s: %w", method, got.err)
		}
		return decode(method, got.message, result)
	case <-ctx.Done():
		cn.cancel(id, deadline)
		return fmt.Errorf("%s: %w", method, ctx.Err())
	case <-timer.C:
		cn.cancel(id, deadline)
		return fmt.Errorf("%s: no answer within the deadline: %w", method, context.DeadlineExceeded)
	}
}

// forget drops a call that will not be answered.
func (cn *conn) forget(id uint64) {
	cn.mu.Lock()
	delete(cn.pending, id)
	cn.mu.Unlock()
}

// cancel gives up on a call and tells the daemon, so it stops the call.
func (cn *conn) cancel(id uint64, deadline time.Time) {
	cn.forget(id)
	frame, _ := json.Marshal(map[string]any{"Cancel": map[string]any{"request_id": id}})
	go func() { _ = cn.write(frame) }()
}

// decode unwraps {"Ok": {"<Method>": {"Ok": v} | {"Err": e}}} or {"Err": {kind, detail}}.
func decode(method string, message json.RawMessage, result any) error {
	var outer struct {
		Ok  map[string]json.RawMessage `json:"Ok"`
		Err *ServerError               `json:"Err"`
	}
	if err := json.Unmarshal(message, &outer); err != nil {
		return fmt.Errorf("%s: an unreadable answer: %w", method, err)
	}
	if outer.Err != nil {
		outer.Err.Method = method
		return outer.Err
	}
	inner, ok := outer.Ok[method]
	if !ok {
		return fmt.Errorf("%s: an answer for another method: %s", method, message)
	}
	var result2 struct {
		Ok  json.RawMessage `json:"Ok"`
		Err json.RawMessage `json:"Err"`
	}
	if err := json.Unmarshal(inner, &result2); err != nil {
		return fmt.Errorf("%s: an unreadable answer: %w", method, err)
	}
	if result2.Err != nil {
		return parseAPIError(method, result2.Err)
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(result2.Ok, result); err != nil {
		return fmt.Errorf("%s: an unreadable result: %w", method, err)
	}
	return nil
}

// closedUnanswered is why a connection ended before the daemon sent anything on it: what a
// daemon does to a peer with no role when it cannot say so with ErrNoRole.
const closedUnanswered = "the daemon closed the connection without answering anything: this process's uid or groups may have no role on the socket (see auth.app_uids and auth.app_gids in the daemon's configuration), or its connection limits are reached"

// ErrDisconnected: the connection ended before the answer came. The call may or may not
// have run; the next call connects again.
var ErrDisconnected = errors.New("latchkey: the connection to the daemon was lost before the answer came")

// ErrClosed: the client was closed.
var ErrClosed = errors.New("latchkey: the client is closed")

// ConnectError: the socket could not be reached. Nothing ran.
type ConnectError struct {
	Path string
	Err  error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("latchkey: cannot connect to %s: %v", e.Path, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ServerError: the daemon did not run the call. Kind is tarpc's number for the reason.
type ServerError struct {
	Kind   uint32 `json:"kind"`
	Detail string `json:"detail"`
	Method string `json:"-"`
}

func (e *ServerError) Error() string {
	what := map[uint32]string{
		0:  "the daemon does not have this method (it is older than this client)",
		1:  "this process's uid and groups have no role on the socket (see the daemon's auth.app_uids and auth.app_gids)",
		10: "the daemon is busy (throttled); the call did not run",
		11: "the daemon could not read the request",
	}[e.Kind]
	if what == "" {
		what = fmt.Sprintf("the daemon did not run the call (kind %d)", e.Kind)
	}
	if e.Method != "" {
		return fmt.Sprintf("%s: %s: %s", e.Method, what, e.Detail)
	}
	return fmt.Sprintf("%s: %s", what, e.Detail)
}

// Is matches the sentinels by kind: errors.Is(err, ErrThrottled).
func (e *ServerError) Is(target error) bool {
	t, ok := target.(*ServerError)
	return ok && t.Detail == "" && t.Kind == e.Kind
}

// The server errors, for errors.Is.
var (
	ErrUnknownMethod  = &ServerError{Kind: 0}
	ErrNoRole         = &ServerError{Kind: 1}
	ErrThrottled      = &ServerError{Kind: 10}
	ErrInvalidRequest = &ServerError{Kind: 11}
)

// APIError is the daemon's typed refusal (ApiError in the protocol): Code is the variant
// name, Details its fields (retry_after_secs, field and reason, ...).
type APIError struct {
	Code    string
	Details map[string]any
	Method  string
}

func (e *APIError) Error() string {
	if len(e.Details) == 0 {
		return fmt.Sprintf("%s: %s", e.Method, e.Code)
	}
	return fmt.Sprintf("%s: %s %v", e.Method, e.Code, e.Details)
}

// Is matches the sentinels by code: errors.Is(err, ErrInvalidCredentials).
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && t.Method == "" && t.Details == nil && t.Code == e.Code
}

// RetryAfter is how long to wait before a retry can succeed (RateLimited; 0 otherwise).
func (e *APIError) RetryAfter() time.Duration {
	secs, _ := e.Details["retry_after_secs"].(float64)
	return time.Duration(secs) * time.Second
}

// The typed errors, for errors.Is. A later daemon may add codes: treat an unknown one as a
// generic refusal.
var (
	ErrInvalidEmail       = &APIError{Code: "InvalidEmail"}
	ErrInvalidInput       = &APIError{Code: "InvalidInput"}
	ErrWeakPassword       = &APIError{Code: "WeakPassword"}
	ErrPasswordMismatch   = &APIError{Code: "PasswordMismatch"}
	ErrEmailTaken         = &APIError{Code: "EmailTaken"}
	ErrInvalidCredentials = &APIError{Code: "InvalidCredentials"}
	ErrInvalidToken       = &APIError{Code: "InvalidToken"}
	ErrNotFound           = &APIError{Code: "NotFound"}
	ErrForbidden          = &APIError{Code: "Forbidden"}
	ErrRateLimited        = &APIError{Code: "RateLimited"}
	ErrUnavailable        = &APIError{Code: "Unavailable"}
)

// parseAPIError reads "EmailTaken" or {"RateLimited": {"retry_after_secs": 60}}.
func parseAPIError(method string, raw json.RawMessage) error {
	var code string
	if json.Unmarshal(raw, &code) == nil {
		return &APIError{Code: code, Method: method}
	}
	var withFields map[string]map[string]any
	if err := json.Unmarshal(raw, &withFields); err != nil || len(withFields) != 1 {
		return fmt.Errorf("%s: an unreadable error from the daemon: %s", method, raw)
	}
	for code, details := range withFields {
		return &APIError{Code: code, Details: details, Method: method}
	}
	return nil
}
