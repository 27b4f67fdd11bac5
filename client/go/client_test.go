package latchkey

// Two kinds of test. The fake-daemon tests play the daemon's side of the socket to pin what
// the client itself does: answers matched by id whatever their order, server errors, a
// cancelled context sending a Cancel, reconnecting after the daemon closes. The flow test
// walks the reset flow against the real latchkeyd, which tests/polyglot.rs starts and names
// in LATCHKEY_SOCKET (with LATCHKEY_MAIL_DIRS, where its mail lands).

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDaemon listens on a socket in a temporary directory and serves each connection with
// handle, which gets the decoded requests one by one.
type fakeDaemon struct {
	path     string
	listener net.Listener
}

func startFake(t *testing.T, handle func(net.Conn)) *fakeDaemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return &fakeDaemon{path: path, listener: l}
}

func readFrame(r io.Reader) (map[string]json.RawMessage, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(head[:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(body, &m)
}

func writeFrame(w io.Writer, v any) {
	body, _ := json.Marshal(v)
	out := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	w.Write(out)
}

// request is a Request frame as the fake reads it.
type request struct {
	ID      uint64                                `json:"id"`
	Context struct{ Deadline map[string]uint64 }  `json:"context"`
	Message map[string]map[string]json.RawMessage `json:"message"`
}

func TestConcurrentCallsAreMatchedByIDWhateverTheOrderOfTheAnswers(t *testing.T) {
	const calls = 32
	fake := startFake(t, func(c net.Conn) {
		var got []request
		for len(got) < calls {
			frame, err := readFrame(c)
			if err != nil {
				return
			}
			var r request
			json.Unmarshal(frame["Request"], &r)
			got = append(got, r)
		}
		// Answer the last first: GetUser echoes the id it was asked for.
		for i := len(got) - 1; i >= 0; i-- {
			var id uint64
			json.Unmarshal(got[i].Message["GetUser"]["id"], &id)
			writeFrame(c, map[string]any{"request_id": got[i].ID, "message": map[string]any{
				"Ok": map[string]any{"GetUser": map[string]any{"Ok": map[string]any{"id": id, "email": fmt.Sprintf("u%d@example.com", id)}}},
			}})
		}
	})
	client := New(fake.path, Options{})
	defer client.Close()
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := 1; i <= calls; i++ {
		wg.Add(1)
		go func(want uint64) {
			defer wg.Done()
			u, err := client.GetUser(context.Background(), want)
			if err != nil {
				errs <- err
			} else if u.ID != want || u.Email != fmt.Sprintf("u%d@example.com", want) {
				errs <- fmt.Errorf("asked for %d, got %+v", want, u)
			}
		}(uint64(i))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServerErrorsAPIErrorsCancellationAndReconnecting(t *testing.T) {
	cancelled := make(chan uint64, 1)
	var connections int
	var mu sync.Mutex
	fake := startFake(t, func(c net.Conn) {
		mu.Lock()
		connections++
		mu.Unlock()
		defer c.Close()
		for {
			frame, err := readFrame(c)
			if err != nil {
				return
			}
			if raw, ok := frame["Cancel"]; ok {
				var cancel struct {
					RequestID uint64 `json:"request_id"`
				}
				json.Unmarshal(raw, &cancel)
				cancelled <- cancel.RequestID
				continue
			}
			var r request
			json.Unmarshal(frame["Request"], &r)
			if _, ok := r.Context.Deadline["secs"]; !ok {
				writeFrame(c, map[string]any{"request_id": r.ID, "message": map[string]any{"Err": map[string]any{"kind": 11, "detail": "no deadline"}}})
				continue
			}
			switch {
			case r.Message["Teleport"] != nil:
				writeFrame(c, map[string]any{"request_id": r.ID, "message": map[string]any{"Err": map[string]any{"kind": 0, "detail": "unknown method `Teleport`"}}})
			case r.Message["VerifyPassword"] != nil:
				writeFrame(c, map[string]any{"request_id": r.ID, "message": map[string]any{"Ok": map[string]any{"VerifyPassword": map[string]any{"Err": map[string]any{"RateLimited": map[string]any{"retry_after_secs": 60}}}}}})
			case r.Message["VerifyPasswordSlowly"] != nil:
				// Never answered: the caller's context ends first.
			case r.Message["Health"] != nil:
				writeFrame(c, map[string]any{"request_id": r.ID, "message": map[string]any{"Ok": map[string]any{"Health": map[string]any{"Ok": map[string]any{"status": "ok", "protocol": 2}}}}})
				return // and close: the next call must connect again
			}
		}
	})
	client := New(fake.path, Options{})
	defer client.Close()
	ctx := context.Background()
	err := client.Call(ctx, "Teleport", nil, nil)
	if !errors.Is(err, ErrUnknownMethod) || errors.Is(err, ErrThrottled) {
		t.Fatalf("expected ErrUnknownMethod, got %v", err)
	}
	_, err = client.VerifyPassword(ctx, "ada@example.com", "guess", "")
	var api *APIError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &api) || api.RetryAfter() != time.Minute {
		t.Fatalf("expected RateLimited with 60 s, got %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = client.Call(short, "VerifyPasswordSlowly", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expected DeadlineExceeded, got %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon got no Cancel for the abandoned call")
	}
	for i := 0; i < 3; i++ {
		h, err := client.Health(ctx)
		if err != nil {
			// The close after an answer can race with the next call; that call says so.
			if !errors.Is(err, ErrDisconnected) {
				t.Fatalf("health %d: %v", i, err)
			}
			continue
		}
		if h.Status != "ok" || h.Protocol != 2 {
			t.Fatalf("health %d: %+v", i, h)
		}
		time.Sleep(50 * time.Millisecond) // let the client see the close
	}
	mu.Lock()
	defer mu.Unlock()
	if connections < 3 {
		t.Fatalf("expected a new connection after each close, got %d connections", connections)
	}
	fake.listener.Close()
	os.Remove(fake.path)
	time.Sleep(50 * time.Millisecond)
	var connectErr *ConnectError
	if _, err := client.Health(ctx); !errors.As(err, &connectErr) {
		t.Fatalf("expected a ConnectError once the daemon is gone, got %v", err)
	}
}

func TestAConnectionClosedBeforeAnyAnswerSaysTheUIDMayHaveNoRole(t *testing.T) {
	fake := startFake(t, func(c net.Conn) { c.Close() })
	client := New(fake.path, Options{})
	defer client.Close()
	_, err := client.Health(context.Background())
	if !errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), "auth.app_gids") {
		t.Fatalf("expected ErrDisconnected saying the uid may have no role, got %v", err)
	}
}

// tokenRE finds a reset token in a link.
var tokenRE = regexp.MustCompile(`[?&]token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)`)

// mailedToken waits for a mail to `to` with a token link in the directories and returns it.
func mailedToken(t *testing.T, dirs []string, to string, skip map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, dir := range dirs {
			names, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
			sort.Strings(names)
			for _, name := range names {
				token := tokenIn(t, name, to)
				if token != "" && !skip[token] {
					return token
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no mail with a token to %s in %v within 20 s", to, dirs)
	return ""
}

// tokenIn is the token in the text part of the .eml at name when it is addressed to `to`.
func tokenIn(t *testing.T, name, to string) string {
	f, err := os.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	msg, err := mail.ReadMessage(f)
	if err != nil || !strings.Contains(strings.ToLower(msg.Header.Get("To")), to) {
		return ""
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
		t.Fatalf("%s: expected a multipart mail, got %q", name, msg.Header.Get("Content-Type"))
	}
	parts := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := parts.NextPart()
		if err != nil {
			return ""
		}
		if !strings.HasPrefix(part.Header.Get("Content-Type"), "text/plain") {
			continue
		}
		// multipart decodes quoted-printable itself; base64 is left to us.
		body, _ := io.ReadAll(part)
		if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "base64") {
			body, _ = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), ""))
		}
		if found := tokenRE.FindSubmatch(body); found != nil {
			return string(found[1])
		}
	}
}

func TestTheWholeResetFlowAgainstTheRealDaemon(t *testing.T) {
	socket := os.Getenv("LATCHKEY_SOCKET")
	if socket == "" {
		t.Fatal("LATCHKEY_SOCKET is not set: this test runs against a real latchkeyd, started by `cargo test -p latchkeyd --test polyglot`")
	}
	mailDirs := strings.Split(os.Getenv("LATCHKEY_MAIL_DIRS"), string(os.PathListSeparator))
	const email, password, newPassword, ip = "ada.go@example.com", "correct horse battery staple", "a brand new passphrase 9", "203.0.113.9"
	client := New(socket, Options{Timeout: 60 * time.Second})
	defer client.Close()
	ctx := context.Background()

	health, err := client.Health(ctx)
	if err != nil || health.Status != "ok" || health.Protocol < 2 || health.CallerRole != "admin" {
		t.Fatalf("health: %+v, %v", health, err)
	}
	known := map[string]bool{}
	for _, m := range health.Methods {
		known[m] = true
	}
	for _, m := range []string{"Health", "CreateUser", "RequestPasswordReset", "CompletePasswordReset", "CredentialChanges"} {
		if !known[m] {
			t.Fatalf("health lists no %s: %v", m, health.Methods)
		}
	}
	if err := client.Call(ctx, "TeleportUser", map[string]any{"id": 1}, nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("an unknown method: expected ErrUnknownMethod, got %v", err)
	}
	if err := client.Call(ctx, "GetUser", map[string]any{"id": "one"}, nil); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("a mistyped argument: expected ErrInvalidRequest, got %v", err)
	}

	user, err := client.CreateUser(ctx, NewUser{Email: strings.ToUpper(email), Name: "Ada Go", Password: password}, ip)
	if err != nil || user.Email != email || user.CredentialEpoch != 0 {
		t.Fatalf("create: %+v, %v", user, err)
	}
	if _, err := client.CreateUser(ctx, NewUser{Email: email, Password: password}, ip); !errors.Is(err, ErrEmailTaken) {
		t.Fatalf("a second account: expected ErrEmailTaken, got %v", err)
	}
	if _, err := client.CreateUser(ctx, NewUser{Email: "weak@example.com", Password: "short"}, ip); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("a weak password: expected ErrWeakPassword, got %v", err)
	}
	if _, err := client.VerifyPassword(ctx, email, "not the password", ip); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a wrong password: expected ErrInvalidCredentials, got %v", err)
	}

	// Concurrent calls on the one connection, each with its own answer.
	var wg sync.WaitGroup
	failures := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i%2 == 0 {
				if u, err := client.GetUser(ctx, user.ID); err != nil || u.ID != user.ID {
					failures <- fmt.Errorf("get_user: %+v, %v", u, err)
				}
			} else if h, err := client.Health(ctx); err != nil || h.Status != "ok" {
				failures <- fmt.Errorf("health: %+v, %v", h, err)
			}
		}(i)
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}

	if err := client.RequestPasswordReset(ctx, email, ip, "en"); err != nil {
		t.Fatalf("request a reset: %v", err)
	}
	if err := client.RequestPasswordReset(ctx, "nobody.go@example.com", ip, ""); err != nil {
		t.Fatalf("an unknown address gets the same answer: %v", err)
	}
	token := mailedToken(t, mailDirs, email, nil)
	check, err := client.CheckResetToken(ctx, token, ip)
	if err != nil || check.State != "valid" || check.ExpiresAt == nil {
		t.Fatalf("check the mailed token: %+v, %v", check, err)
	}
	if _, err := client.CompletePasswordReset(ctx, token, newPassword, newPassword+"!", ip); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("a mismatch: expected ErrPasswordMismatch, got %v", err)
	}
	done, err := client.CompletePasswordReset(ctx, token, newPassword, newPassword, ip)
	if err != nil || done.UserID != user.ID || done.CredentialEpoch != 1 {
		t.Fatalf("complete: %+v, %v", done, err)
	}
	if _, err := client.CompletePasswordReset(ctx, token, newPassword, "", ip); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("the token twice: expected ErrInvalidToken, got %v", err)
	}
	changes, err := client.CredentialChanges(ctx, 0, 100)
	if err != nil || !changes.CaughtUp {
		t.Fatalf("credential changes: %+v, %v", changes, err)
	}
	found := false
	for _, c := range changes.Changes {
		found = found || (c.Kind == "reset_completed" && c.UserID == user.ID)
	}
	if !found {
		t.Fatalf("credential changes list no reset of %d: %+v", user.ID, changes)
	}
	if _, err := client.VerifyPassword(ctx, email, password, ip); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the old password: expected ErrInvalidCredentials, got %v", err)
	}
	if u, err := client.VerifyPassword(ctx, email, newPassword, ip); err != nil || u.CredentialEpoch != 1 {
		t.Fatalf("the new password: %+v, %v", u, err)
	}

	// A deadline too short for a hash: the call gives up at the deadline, and the
	// connection still serves the next one.
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	if _, err := client.VerifyPassword(short, email, newPassword, ip); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a 1 ms deadline: expected DeadlineExceeded, got %v", err)
	}
	if _, err := client.SetStatus(ctx, user.ID, "disabled"); err != nil {
		t.Fatalf("disable: %v", err)
	}
	if _, err := client.VerifyPassword(ctx, email, newPassword, ip); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a disabled account: expected ErrInvalidCredentials, got %v", err)
	}
	if err := client.DeleteUser(ctx, user.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := client.GetUser(ctx, user.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted account: expected ErrNotFound, got %v", err)
	}
}
