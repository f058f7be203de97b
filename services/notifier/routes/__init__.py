"""The notifier's HTTP routes: users' inbox, unsubscribe links, operators' views."""
