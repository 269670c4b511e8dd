;; rec-nft: one SIP-009 token per Renewable Energy Certificate (or a split part of one).
;; Event shapes and error codes are specified in EVENTS.md; keep both in sync.
(impl-trait .nft-trait.nft-trait)

(define-non-fungible-token rec uint)

(define-constant ERR-NOT-OWNER (err u200))
(define-constant ERR-NOT-PENDING-OWNER (err u201))
(define-constant ERR-PAUSED (err u202))
(define-constant ERR-NOT-AUTHORIZED (err u203))
(define-constant ERR-REPORT-NOT-FOUND (err u204))
(define-constant ERR-REPORT-NOT-ATTESTED (err u205))
(define-constant ERR-FACILITY-NOT-ACTIVE (err u206))
(define-constant ERR-INVALID-URI (err u207))
(define-constant ERR-TOKEN-NOT-FOUND (err u208))
(define-constant ERR-NOT-TOKEN-OWNER (err u209))
(define-constant ERR-TOKEN-NOT-ACTIVE (err u210))
(define-constant ERR-ESCROW-NOT-ALLOWED (err u211))
(define-constant ERR-INVALID-SPLIT (err u212))
(define-constant ERR-SPLIT-SUM-MISMATCH (err u213))
(define-constant ERR-NOT-VERIFIER (err u214))
(define-constant ERR-ALREADY-REVOKED (err u215))
(define-constant ERR-INVALID-BENEFICIARY (err u216))
(define-constant ERR-INVALID-CONSUMPTION (err u217))
(define-constant ERR-INVALID-CLAIM-PERIOD (err u218))
(define-constant ERR-INVALID-REPORTING-YEAR (err u219))
(define-constant ERR-INVALID-PURPOSE (err u220))
(define-constant ERR-SELF-TRANSFER (err u221))
(define-constant ERR-ESCROW-NOT-EMPTY (err u222))

(define-constant MAX-CHILDREN u20)

(define-data-var contract-owner principal tx-sender)
(define-data-var pending-owner (optional principal) none)
(define-data-var paused bool false)
;; The escrow principal: tokens it holds are listed and only it can move them.
(define-data-var marketplace principal .marketplace)
(define-data-var escrowed-count uint u0)
;; Tokens currently in escrow. Tracked per token rather than inferred from the holder, so a
;; principal that becomes the marketplace keeps full control of tokens it owned before.
(define-map escrowed uint bool)
(define-data-var last-token-id uint u0)
;; Serials are global Wh offsets, so issuances can never share a serial.
(define-data-var last-serial uint u0)
(define-data-var issued-wh uint u0)
;; Wh held in each live status (active, listed, retired, revoked); they always sum to issued-wh.
(define-map wh-by-status (string-ascii 8) uint)

(define-map certificates uint {
  facility-id: uint,
  report-id: uint,
  period-start: uint,
  period-end: uint,
  vintage: uint,
  wh: uint,
  serial-start: uint,
  serial-end: uint,
  token-uri: (string-ascii 256),
  status: (string-ascii 8),
  parent-id: (optional uint),
  issued-at: uint,
})

(define-map retirements uint {
  owner: principal,
  beneficiary-name: (string-utf8 128),
  beneficiary: (optional principal),
  consumption-country: (string-ascii 2),
  consumption-subdivision: (string-ascii 6),
  consumption-market-boundary: (string-ascii 32),
  claim-period-start: uint,
  claim-period-end: uint,
  reporting-year: uint,
  purpose: (string-ascii 32),
  retired-at: uint,
})

;; ---------------------------------------------------------------- admin

(define-private (assert-owner)
  (ok (asserts! (is-eq tx-sender (var-get contract-owner)) ERR-NOT-OWNER)))

(define-private (assert-not-paused)
  (ok (asserts! (not (var-get paused)) ERR-PAUSED)))

(define-public (transfer-ownership (new-owner principal))
  (begin
    (try! (assert-owner))
    (var-set pending-owner (some new-owner))
    (print { event: "ownership-transfer-started", owner: tx-sender, pending-owner: new-owner })
    (ok true)))

(define-public (accept-ownership)
  (let ((previous (var-get contract-owner)))
    (asserts! (is-eq (some tx-sender) (var-get pending-owner)) ERR-NOT-PENDING-OWNER)
    (var-set contract-owner tx-sender)
    (var-set pending-owner none)
    (print { event: "ownership-transferred", previous-owner: previous, new-owner: tx-sender })
    (ok true)))

(define-public (set-paused (value bool))
  (begin
    (try! (assert-owner))
    (var-set paused value)
    (print { event: "pause-changed", paused: value, by: tx-sender })
    (ok true)))

;; Changing the escrow principal while it holds tokens would strand them.
(define-public (set-marketplace (new-marketplace principal))
  (let ((old (var-get marketplace)))
    (try! (assert-owner))
    (asserts! (is-eq (var-get escrowed-count) u0) ERR-ESCROW-NOT-EMPTY)
    (var-set marketplace new-marketplace)
    (print { event: "marketplace-changed", old-marketplace: old, new-marketplace: new-marketplace })
    (ok true)))

;; ---------------------------------------------------------------- helpers

(define-private (status-wh (status (string-ascii 8)))
  (default-to u0 (map-get? wh-by-status status)))

(define-private (move-wh (from (string-ascii 8)) (to (string-ascii 8)) (wh uint))
  (begin
    (map-set wh-by-status from (- (status-wh from) wh))
    (map-set wh-by-status to (+ (status-wh to) wh))))

(define-private (set-status (token-id uint) (status (string-ascii 8)))
  (map-set certificates token-id
    (merge (unwrap-panic (map-get? certificates token-id)) { status: status })))

;; UTC calendar year of a unix timestamp (days-from-civil inverse, proleptic Gregorian).
(define-read-only (year-of (timestamp uint))
  (let ((z (+ (/ timestamp u86400) u719468))
        (era (/ z u146097))
        (doe (- z (* era u146097)))
        (yoe (/ (- (+ (- doe (/ doe u1460)) (/ doe u36524)) (/ doe u146096)) u365))
        (doy (- doe (- (+ (* u365 yoe) (/ yoe u4)) (/ yoe u100))))
        (mp (/ (+ (* u5 doy) u2) u153))
        (year (+ yoe (* era u400))))
    (if (>= mp u10) (+ year u1) year)))

;; ---------------------------------------------------------------- mint

(define-public (mint (report-id uint) (token-uri (string-ascii 256)))
  (let ((report (unwrap! (contract-call? .verification get-report report-id) ERR-REPORT-NOT-FOUND))
        (facility (unwrap! (contract-call? .verification get-facility (get facility-id report)) ERR-FACILITY-NOT-ACTIVE))
        (owner (get owner facility))
        (token-id (+ (var-get last-token-id) u1))
        (wh (get wh report))
        (serial-start (var-get last-serial))
        (certificate {
          facility-id: (get facility-id report), report-id: report-id,
          period-start: (get period-start report), period-end: (get period-end report),
          vintage: (year-of (get period-start report)), wh: wh,
          serial-start: serial-start, serial-end: (+ serial-start wh), token-uri: token-uri,
          status: "active", parent-id: none, issued-at: stacks-block-height }))
    (try! (assert-not-paused))
    (asserts! (or (is-eq tx-sender owner)
                  (contract-call? .verification is-active-verifier tx-sender)) ERR-NOT-AUTHORIZED)
    (asserts! (is-eq (get status report) "attested") ERR-REPORT-NOT-ATTESTED)
    (asserts! (is-eq (get status facility) "active") ERR-FACILITY-NOT-ACTIVE)
    (asserts! (is-eq (slice? token-uri u0 u7) (some "ipfs://")) ERR-INVALID-URI)
    (try! (contract-call? .verification mark-minted report-id token-id))
    (unwrap-panic (nft-mint? rec token-id owner))
    (map-set certificates token-id certificate)
    (var-set last-token-id token-id)
    (var-set last-serial (+ serial-start wh))
    (var-set issued-wh (+ (var-get issued-wh) wh))
    (map-set wh-by-status "active" (+ (status-wh "active") wh))
    (print (merge { event: "certificate-minted", token-id: token-id, owner: owner } certificate))
    (ok token-id)))

;; ---------------------------------------------------------------- transfer (SIP-009)

;; Owner-to-owner moves need an active token. Moves into the escrow principal happen only when
;; the marketplace itself asks (so nothing lands there unlisted); moves out of it likewise, and
;; those stay possible while paused or revoked so a listing can always be unwound.
(define-public (transfer (token-id uint) (sender principal) (recipient principal))
  (let ((certificate (unwrap! (map-get? certificates token-id) ERR-TOKEN-NOT-FOUND))
        (holder (unwrap! (nft-get-owner? rec token-id) ERR-TOKEN-NOT-FOUND))
        (market (var-get marketplace))
        (status (get status certificate))
        (wh (get wh certificate)))
    (asserts! (and (is-eq tx-sender sender) (is-eq holder sender)) ERR-NOT-TOKEN-OWNER)
    (asserts! (not (is-eq sender recipient)) ERR-SELF-TRANSFER)
    (if (is-escrowed token-id)
      (begin
        (asserts! (is-eq contract-caller market) ERR-ESCROW-NOT-ALLOWED)
        (try! (nft-transfer? rec token-id sender recipient))
        (map-delete escrowed token-id)
        (var-set escrowed-count (- (var-get escrowed-count) u1))
        (if (is-eq status "listed")
          (begin (set-status token-id "active") (move-wh "listed" "active" wh))
          true)
        (print { event: "certificate-transferred", token-id: token-id, sender: sender,
                 recipient: recipient, kind: "release",
                 status: (if (is-eq status "listed") "active" status) })
        (ok true))
      (begin
        (try! (assert-not-paused))
        (asserts! (is-eq status "active") ERR-TOKEN-NOT-ACTIVE)
        (try! (nft-transfer? rec token-id sender recipient))
        (if (is-eq recipient market)
          (begin
            (asserts! (is-eq contract-caller market) ERR-ESCROW-NOT-ALLOWED)
            (map-set escrowed token-id true)
            (var-set escrowed-count (+ (var-get escrowed-count) u1))
            (set-status token-id "listed")
            (move-wh "active" "listed" wh)
            (print { event: "certificate-transferred", token-id: token-id, sender: sender,
                     recipient: recipient, kind: "escrow", status: "listed" }))
          (print { event: "certificate-transferred", token-id: token-id, sender: sender,
                   recipient: recipient, kind: "transfer", status: "active" }))
        (ok true)))))

;; ---------------------------------------------------------------- split

(define-private (mint-child
    (amount uint)
    (acc { parent-id: uint, owner: principal, next-id: uint, next-serial: uint,
           children: (list 20 { token-id: uint, wh: uint, serial-start: uint, serial-end: uint }) }))
  (let ((parent (unwrap-panic (map-get? certificates (get parent-id acc))))
        (child-id (get next-id acc))
        (serial-start (get next-serial acc))
        (serial-end (+ serial-start amount)))
    (map-set certificates child-id (merge parent {
      wh: amount, serial-start: serial-start, serial-end: serial-end, status: "active",
      parent-id: (some (get parent-id acc)) }))
    (unwrap-panic (nft-mint? rec child-id (get owner acc)))
    (merge acc {
      next-id: (+ child-id u1),
      next-serial: serial-end,
      children: (unwrap-panic (as-max-len? (append (get children acc)
        { token-id: child-id, wh: amount, serial-start: serial-start, serial-end: serial-end }) u20)) })))

(define-public (split (token-id uint) (amounts (list 20 uint)))
  (let ((certificate (unwrap! (map-get? certificates token-id) ERR-TOKEN-NOT-FOUND))
        (holder (unwrap! (nft-get-owner? rec token-id) ERR-TOKEN-NOT-FOUND))
        (first-child (+ (var-get last-token-id) u1)))
    (try! (assert-not-paused))
    (asserts! (is-eq tx-sender holder) ERR-NOT-TOKEN-OWNER)
    (asserts! (is-eq (get status certificate) "active") ERR-TOKEN-NOT-ACTIVE)
    (asserts! (and (>= (len amounts) u2) (is-none (index-of? amounts u0))) ERR-INVALID-SPLIT)
    (asserts! (is-eq (fold + amounts u0) (get wh certificate)) ERR-SPLIT-SUM-MISMATCH)
    (unwrap-panic (nft-burn? rec token-id holder))
    (set-status token-id "split")
    (let ((result (fold mint-child amounts {
            parent-id: token-id, owner: holder, next-id: first-child,
            next-serial: (get serial-start certificate), children: (list) })))
      (var-set last-token-id (- (get next-id result) u1))
      (print { event: "certificate-split", parent-id: token-id, owner: holder,
               wh: (get wh certificate), serial-start: (get serial-start certificate),
               serial-end: (get serial-end certificate), children: (get children result) })
      (ok (get children result)))))

;; ---------------------------------------------------------------- retire

(define-public (retire
    (token-id uint)
    (beneficiary-name (string-utf8 128))
    (beneficiary (optional principal))
    (consumption-country (string-ascii 2))
    (consumption-subdivision (string-ascii 6))
    (consumption-market-boundary (string-ascii 32))
    (claim-period-start uint)
    (claim-period-end uint)
    (reporting-year uint)
    (purpose (string-ascii 32)))
  (let ((certificate (unwrap! (map-get? certificates token-id) ERR-TOKEN-NOT-FOUND))
        (holder (unwrap! (nft-get-owner? rec token-id) ERR-TOKEN-NOT-FOUND))
        (claim {
          owner: holder, beneficiary-name: beneficiary-name, beneficiary: beneficiary,
          consumption-country: consumption-country, consumption-subdivision: consumption-subdivision,
          consumption-market-boundary: consumption-market-boundary,
          claim-period-start: claim-period-start, claim-period-end: claim-period-end,
          reporting-year: reporting-year, purpose: purpose, retired-at: stacks-block-height }))
    (try! (assert-not-paused))
    (asserts! (is-eq tx-sender holder) ERR-NOT-TOKEN-OWNER)
    (asserts! (is-eq (get status certificate) "active") ERR-TOKEN-NOT-ACTIVE)
    (asserts! (> (len beneficiary-name) u0) ERR-INVALID-BENEFICIARY)
    (asserts! (and (is-eq (len consumption-country) u2) (> (len consumption-market-boundary) u0)) ERR-INVALID-CONSUMPTION)
    (asserts! (< claim-period-start claim-period-end) ERR-INVALID-CLAIM-PERIOD)
    (asserts! (and (>= reporting-year u2000) (<= reporting-year u2200)) ERR-INVALID-REPORTING-YEAR)
    (asserts! (> (len purpose) u0) ERR-INVALID-PURPOSE)
    (map-set retirements token-id claim)
    (set-status token-id "retired")
    (move-wh "active" "retired" (get wh certificate))
    (print (merge claim {
      event: "certificate-retired", token-id: token-id, wh: (get wh certificate),
      facility-id: (get facility-id certificate), report-id: (get report-id certificate),
      vintage: (get vintage certificate), period-start: (get period-start certificate),
      period-end: (get period-end certificate), serial-start: (get serial-start certificate),
      serial-end: (get serial-end certificate), status: "retired" }))
    (ok true)))

;; ---------------------------------------------------------------- revoke

(define-public (revoke (token-id uint) (reason (string-utf8 256)))
  (let ((certificate (unwrap! (map-get? certificates token-id) ERR-TOKEN-NOT-FOUND))
        (status (get status certificate)))
    (asserts! (contract-call? .verification is-active-verifier tx-sender) ERR-NOT-VERIFIER)
    (asserts! (not (or (is-eq status "split") (is-eq status "revoked"))) ERR-ALREADY-REVOKED)
    (set-status token-id "revoked")
    (move-wh status "revoked" (get wh certificate))
    (print { event: "certificate-revoked", token-id: token-id,
             owner: (unwrap-panic (nft-get-owner? rec token-id)), verifier: tx-sender,
             reason: reason, previous-status: status, status: "revoked" })
    (ok true)))

;; ---------------------------------------------------------------- read-only

(define-read-only (get-last-token-id) (ok (var-get last-token-id)))

(define-read-only (get-token-uri (token-id uint))
  (ok (get token-uri (map-get? certificates token-id))))

(define-read-only (get-owner (token-id uint)) (ok (nft-get-owner? rec token-id)))

(define-read-only (get-certificate (token-id uint)) (map-get? certificates token-id))
(define-read-only (get-status (token-id uint)) (get status (map-get? certificates token-id)))
(define-read-only (get-wh (token-id uint)) (get wh (map-get? certificates token-id)))
(define-read-only (get-facility-id (token-id uint)) (get facility-id (map-get? certificates token-id)))
(define-read-only (get-report-id (token-id uint)) (get report-id (map-get? certificates token-id)))
(define-read-only (get-vintage (token-id uint)) (get vintage (map-get? certificates token-id)))
(define-read-only (get-parent-id (token-id uint))
  (match (map-get? certificates token-id) c (get parent-id c) none))
(define-read-only (get-issued-at (token-id uint)) (get issued-at (map-get? certificates token-id)))
(define-read-only (get-period (token-id uint))
  (match (map-get? certificates token-id)
    c (some { period-start: (get period-start c), period-end: (get period-end c) })
    none))
(define-read-only (get-serials (token-id uint))
  (match (map-get? certificates token-id)
    c (some { serial-start: (get serial-start c), serial-end: (get serial-end c) })
    none))
(define-read-only (get-retirement (token-id uint)) (map-get? retirements token-id))
(define-read-only (get-marketplace) (var-get marketplace))
(define-read-only (get-escrowed-count) (var-get escrowed-count))
(define-read-only (is-escrowed (token-id uint)) (default-to false (map-get? escrowed token-id)))
(define-read-only (get-issued-wh) (var-get issued-wh))
(define-read-only (get-status-wh (status (string-ascii 8))) (status-wh status))
(define-read-only (get-contract-owner) (var-get contract-owner))
(define-read-only (get-pending-owner) (var-get pending-owner))
(define-read-only (is-paused) (var-get paused))
