package latchkey

// The wire types, with the protocol's JSON field names (docs/PROTOCOL.md, section 10).
// Integers are uint64 as on the wire; optional values are pointers.

// User is an account as the daemon reports it. The password hash never leaves the daemon.
type User struct {
	ID                uint64  `json:"id"`
	Email             string  `json:"email"`
	Name              string  `json:"name"`
	Role              string  `json:"role"`
	Status            string  `json:"status"` // "active" or "disabled"
	Locale            *string `json:"locale"`
	CreatedAt         uint64  `json:"created_at"`
	UpdatedAt         uint64  `json:"updated_at"`
	PasswordChangedAt uint64  `json:"password_changed_at"`
	// Bumped on every password change and when the account is disabled: end sessions
	// issued under an older epoch.
	CredentialEpoch uint64 `json:"credential_epoch"`
}

// NewUser is what CreateUser takes.
type NewUser struct {
	Email    string  `json:"email"`
	Name     string  `json:"name"`
	Password string  `json:"password"`
	Role     *string `json:"role,omitempty"`
	Locale   *string `json:"locale,omitempty"`
}

// SignUp is what SignUp takes: an account as a person asks for it on a sign-up form.
type SignUp struct {
	Email    string  `json:"email"`
	Name     string  `json:"name"`
	Password string  `json:"password"`
	Locale   *string `json:"locale,omitempty"`
}

// SignUpOutcome is how a sign-up went: Outcome "created" (User is set) or
// "confirmation_sent" (a mail went out; the account exists once the link is used).
type SignUpOutcome struct {
	Outcome string `json:"outcome"`
	User    *User  `json:"user,omitempty"`
}

// PasswordChanged is the result of a password change: end the user's sessions from older
// epochs.
type PasswordChanged struct {
	UserID          uint64 `json:"user_id"`
	CredentialEpoch uint64 `json:"credential_epoch"`
}

// Health is the daemon's answer to Health.
type Health struct {
	Status     string   `json:"status"`
	Version    string   `json:"version"`
	UptimeSecs uint64   `json:"uptime_secs"`
	CallerRole string   `json:"caller_role"` // "app", "admin" or "monitor"
	Store      string   `json:"store"`
	Protocol   uint32   `json:"protocol"` // 0 from a daemon older than protocol 2
	Methods    []string `json:"methods"`
}

// TokenCheck is the answer to CheckResetToken: State is "valid", "expired", "used" or
// "invalid" (a later daemon may add states: treat an unknown one as "invalid").
type TokenCheck struct {
	State     string  `json:"state"`
	ExpiresAt *uint64 `json:"expires_at"`
}

// ResetLink is a reset link made by an admin for support staff.
type ResetLink struct {
	UserID    uint64 `json:"user_id"`
	Link      string `json:"link"`
	ExpiresAt uint64 `json:"expires_at"`
}

// UserRef names an account by id or by email: set exactly one.
type UserRef struct {
	ID    *uint64 `json:"id,omitempty"`
	Email *string `json:"email,omitempty"`
}

// ByID is a UserRef by id.
func ByID(id uint64) UserRef { return UserRef{ID: &id} }

// ByEmail is a UserRef by email.
func ByEmail(email string) UserRef { return UserRef{Email: &email} }

// Event is one entry of the event log (admin).
type Event struct {
	Seq      uint64  `json:"seq"`
	At       uint64  `json:"at"`
	Kind     string  `json:"kind"`
	UserID   *uint64 `json:"user_id"`
	ClientIP *string `json:"client_ip"`
}

// CredentialChange is one change that ends an account's sessions.
type CredentialChange struct {
	Seq    uint64 `json:"seq"`
	At     uint64 `json:"at"`
	Kind   string `json:"kind"`
	UserID uint64 `json:"user_id"`
}

// CredentialChanges is a page of them: call again with Next until CaughtUp.
type CredentialChanges struct {
	Changes  []CredentialChange `json:"changes"`
	Next     uint64             `json:"next"`
	CaughtUp bool               `json:"caught_up"`
}

// OutboxMessage is a queued or dead mail message as admins see it (never the body).
type OutboxMessage struct {
	ID            uint64  `json:"id"`
	Kind          string  `json:"kind"`
	To            string  `json:"to"`
	State         string  `json:"state"` // "queued" or "dead"
	Attempts      uint32  `json:"attempts"`
	CreatedAt     uint64  `json:"created_at"`
	NextAttemptAt *uint64 `json:"next_attempt_at"`
	LastError     *string `json:"last_error"`
}

// ImportUser is an account brought in with its existing bcrypt or argon2 hash.
type ImportUser struct {
	Email        string  `json:"email"`
	Name         string  `json:"name"`
	Role         *string `json:"role,omitempty"`
	Status       *string `json:"status,omitempty"`
	PasswordHash string  `json:"password_hash"`
	Locale       *string `json:"locale,omitempty"`
	CreatedAt    *uint64 `json:"created_at,omitempty"`
}

// ExportedUser is one account as ExportUsers gives it.
type ExportedUser struct {
	ID uint64 `json:"id"`
	ImportUser
}

// ImportOutcome is one imported account's outcome: its new id, or why it was skipped.
type ImportOutcome struct {
	ID  uint64
	Err error
}

// BackupChunk is one piece of an online backup.
type BackupChunk struct {
	Session uint64 `json:"session"`
	Data    string `json:"data"` // base64, standard alphabet, padded
	Last    bool   `json:"last"`
}
