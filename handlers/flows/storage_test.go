package flows

import (
	"github.com/ory/fosite/handler/oauth2"

	"github.com/deputyauth/deputy/storage"
)

// The flows take fosite's own storage interfaces (the factories assert them
// on compose.Compose's storage argument); deputy's store must keep
// satisfying them.
var _ oauth2.CoreStorage = (*storage.Store)(nil)
