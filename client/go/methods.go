package latchkey

import (
	"context"
	"encoding/json"
)

// The methods, one per RPC, by the names of the protocol. Optional string arguments
// (clientIP, locale, ...) are left out when empty. Each method's role and errors are in
// docs/PROTOCOL.md, section 12.

// opt is an optional string argument: null when empty.
func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Health reports liveness, the version, the protocol and methods, and this connection's role.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.Call(ctx, "Health", nil, &h)
	return h, err
}

// Metrics returns the metrics in the Prometheus text format (any role).
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var text string
	err := c.Call(ctx, "Metrics", nil, &text)
	return text, err
}

// CreateUser creates an account; clientIP counts against the per-IP sign-up limit.
func (c *Client) CreateUser(ctx context.Context, user NewUser, clientIP string) (User, error) {
	var u User
	err := c.Call(ctx, "CreateUser", map[string]any{"user": user, "client_ip": opt(clientIP)}, &u)
	return u, err
}

// SignUp signs a person up from a sign-up form (see SignUpOutcome).
func (c *Client) SignUp(ctx context.Context, form SignUp, clientIP string) (SignUpOutcome, error) {
	var o SignUpOutcome
	err := c.Call(ctx, "SignUp", map[string]any{"user": form, "client_ip": opt(clientIP)}, &o)
	return o, err
}

// ConfirmSignUp finishes a concealed sign-up with the mailed token and the sign-up password.
func (c *Client) ConfirmSignUp(ctx context.Context, token, password, clientIP string) (User, error) {
	var u User
	err := c.Call(ctx, "ConfirmSignUp", map[string]any{"token": token, "password": password, "client_ip": opt(clientIP)}, &u)
	return u, err
}

// GetUser looks an account up by id.
func (c *Client) GetUser(ctx context.Context, id uint64) (User, error) {
	var u User
	err := c.Call(ctx, "GetUser", map[string]any{"id": id}, &u)
	return u, err
}

// FindUser looks an account up by email.
func (c *Client) FindUser(ctx context.Context, email string) (User, error) {
	var u User
	err := c.Call(ctx, "FindUser", map[string]any{"email": email}, &u)
	return u, err
}

// VerifyPassword checks a login; every failure is ErrInvalidCredentials (or ErrRateLimited).
func (c *Client) VerifyPassword(ctx context.Context, email, password, clientIP string) (User, error) {
	var u User
	err := c.Call(ctx, "VerifyPassword", map[string]any{"email": email, "password": password, "client_ip": opt(clientIP)}, &u)
	return u, err
}

// ChangePassword changes a password after checking the current one.
func (c *Client) ChangePassword(ctx context.Context, id uint64, current, next string) (PasswordChanged, error) {
	var p PasswordChanged
	err := c.Call(ctx, "ChangePassword", map[string]any{"id": id, "current_password": current, "new_password": next}, &p)
	return p, err
}

// SetStatus enables ("active") or disables ("disabled") an account (admin).
func (c *Client) SetStatus(ctx context.Context, id uint64, status string) (User, error) {
	var u User
	err := c.Call(ctx, "SetStatus", map[string]any{"id": id, "status": status}, &u)
	return u, err
}

// DeleteUser deletes an account and everything attached to it (admin).
func (c *Client) DeleteUser(ctx context.Context, id uint64) error {
	return c.Call(ctx, "DeleteUser", map[string]any{"id": id}, nil)
}

// ListUsers lists accounts in id order after `after`, at most limit (admin).
func (c *Client) ListUsers(ctx context.Context, after uint64, limit uint32) ([]User, error) {
	var us []User
	err := c.Call(ctx, "ListUsers", map[string]any{"after": after, "limit": limit}, &us)
	return us, err
}

// SetPassword sets a password without the current one (admin).
func (c *Client) SetPassword(ctx context.Context, id uint64, password string) (PasswordChanged, error) {
	var p PasswordChanged
	err := c.Call(ctx, "SetPassword", map[string]any{"id": id, "new_password": password}, &p)
	return p, err
}

// RequestPasswordReset starts a reset: nil for every valid address, known or not.
func (c *Client) RequestPasswordReset(ctx context.Context, email, clientIP, locale string) error {
	return c.Call(ctx, "RequestPasswordReset", map[string]any{"email": email, "client_ip": opt(clientIP), "locale": opt(locale)}, nil)
}

// CheckResetToken says whether a token is usable, without using it.
func (c *Client) CheckResetToken(ctx context.Context, token, clientIP string) (TokenCheck, error) {
	var t TokenCheck
	err := c.Call(ctx, "CheckResetToken", map[string]any{"token": token, "client_ip": opt(clientIP)}, &t)
	return t, err
}

// CompletePasswordReset uses a token to set a new password; confirm may be empty.
func (c *Client) CompletePasswordReset(ctx context.Context, token, password, confirm, clientIP string) (PasswordChanged, error) {
	var p PasswordChanged
	err := c.Call(ctx, "CompletePasswordReset", map[string]any{
		"token": token, "new_password": password, "confirm_password": opt(confirm), "client_ip": opt(clientIP),
	}, &p)
	return p, err
}

// AdminResetLink makes a reset link for support staff (admin); lifetimeSecs 0 is the default.
func (c *Client) AdminResetLink(ctx context.Context, user UserRef, lifetimeSecs uint64) (ResetLink, error) {
	var l ResetLink
	var lifetime *uint64
	if lifetimeSecs > 0 {
		lifetime = &lifetimeSecs
	}
	err := c.Call(ctx, "AdminResetLink", map[string]any{"user": user, "lifetime_secs": lifetime}, &l)
	return l, err
}

// Events reads the event log after the cursor `after` (admin).
func (c *Client) Events(ctx context.Context, after uint64, limit uint32) ([]Event, error) {
	var es []Event
	err := c.Call(ctx, "Events", map[string]any{"after": after, "limit": limit}, &es)
	return es, err
}

// CredentialChanges reads the changes that end sessions after the cursor `after` (app).
func (c *Client) CredentialChanges(ctx context.Context, after uint64, limit uint32) (CredentialChanges, error) {
	var cc CredentialChanges
	err := c.Call(ctx, "CredentialChanges", map[string]any{"after": after, "limit": limit}, &cc)
	return cc, err
}

// OutboxList lists queued and dead mail with ids above `after` (admin).
func (c *Client) OutboxList(ctx context.Context, after uint64, limit uint32) ([]OutboxMessage, error) {
	var ms []OutboxMessage
	err := c.Call(ctx, "OutboxList", map[string]any{"after": after, "limit": limit}, &ms)
	return ms, err
}

// OutboxRetry puts a message back in the queue, due now (admin).
func (c *Client) OutboxRetry(ctx context.Context, id uint64) error {
	return c.Call(ctx, "OutboxRetry", map[string]any{"id": id}, nil)
}

// OutboxDrop deletes a message unsent (admin).
func (c *Client) OutboxDrop(ctx context.Context, id uint64) error {
	return c.Call(ctx, "OutboxDrop", map[string]any{"id": id}, nil)
}

// ImportUsers imports accounts with their existing hashes (admin), at most 1000 per call.
// Each account succeeds (its new ID) or fails (Err, an *APIError) on its own, in order.
func (c *Client) ImportUsers(ctx context.Context, users []ImportUser) ([]ImportOutcome, error) {
	var outcomes []map[string]json.RawMessage
	if err := c.Call(ctx, "ImportUsers", map[string]any{"users": users}, &outcomes); err != nil {
		return nil, err
	}
	out := make([]ImportOutcome, 0, len(outcomes))
	for _, o := range outcomes {
		var id uint64
		if raw, ok := o["Ok"]; ok && json.Unmarshal(raw, &id) == nil {
			out = append(out, ImportOutcome{ID: id})
			continue
		}
		out = append(out, ImportOutcome{Err: parseAPIError("ImportUsers", o["Err"])})
	}
	return out, nil
}

// ExportUsers gives accounts with their hashes after `after`, in the form ImportUsers takes (admin).
func (c *Client) ExportUsers(ctx context.Context, after uint64, limit uint32) ([]ExportedUser, error) {
	var us []ExportedUser
	err := c.Call(ctx, "ExportUsers", map[string]any{"after": after, "limit": limit}, &us)
	return us, err
}

// BackupRead reads an online backup piece by piece (admin): session 0 starts one.
func (c *Client) BackupRead(ctx context.Context, session uint64) (BackupChunk, error) {
	var b BackupChunk
	var s *uint64
	if session > 0 {
		s = &session
	}
	err := c.Call(ctx, "BackupRead", map[string]any{"session": s}, &b)
	return b, err
}

// BackupCancel abandons a backup before its last chunk (admin).
func (c *Client) BackupCancel(ctx context.Context, session uint64) error {
	return c.Call(ctx, "BackupCancel", map[string]any{"session": session}, nil)
}
