;; marketplace: escrowed fixed-price listings and English auctions of rec-nft certificates,
;; paid in STX or a whitelisted SIP-010 token, with a platform fee to a treasury.
;; Event shapes and error codes are specified in EVENTS.md; keep both in sync.
(use-trait ft-trait .sip-010-trait.sip-010-trait)

(define-constant ERR-NOT-OWNER (err u300))
(define-constant ERR-NOT-PENDING-OWNER (err u301))
(define-constant ERR-PAUSED (err u302))
(define-constant ERR-CURRENCY-NOT-ALLOWED (err u303))
(define-constant ERR-INVALID-PRICE (err u304))
(define-constant ERR-INVALID-END-HEIGHT (err u305))
(define-constant ERR-LISTING-NOT-FOUND (err u306))
(define-constant ERR-LISTING-NOT-ACTIVE (err u307))
(define-constant ERR-NOT-SELLER (err u308))
(define-constant ERR-LISTING-ENDED (err u309))
(define-constant ERR-LISTING-NOT-ENDED (err u310))
(define-constant ERR-WRONG-KIND (err u311))
(define-constant ERR-WRONG-CURRENCY (err u312))
(define-constant ERR-SELLER-CANNOT-BUY (err u313))
(define-constant ERR-BID-TOO-LOW (err u314))
(define-constant ERR-HAS-BIDS (err u315))
(define-constant ERR-INVALID-FEE (err u316))
(define-constant ERR-INVALID-INCREMENT (err u317))
(define-constant ERR-CERTIFICATE-REVOKED (err u318))
(define-constant ERR-PAYMENT-FAILED (err u319))
(define-constant ERR-INVALID-TREASURY (err u320))

(define-constant MAX-FEE-BPS u1000)
(define-constant BPS-DENOMINATOR u10000)

(define-data-var contract-owner principal tx-sender)
(define-data-var pending-owner (optional principal) none)
(define-data-var paused bool false)
(define-data-var fee-bps uint u250)
(define-data-var treasury principal tx-sender)
(define-data-var last-listing-id uint u0)

;; Whitelisted SIP-010 currencies; STX needs no entry.
(define-map currencies principal bool)
(map-set currencies .sbtc-token true)

(define-map listings uint {
  kind: (string-ascii 12),
  token-id: uint,
  seller: principal,
  currency: (optional principal),
  price: uint,
  reserve-price: uint,
  min-increment: uint,
  start-height: uint,
  end-height: uint,
  status: (string-ascii 10),
  highest-bidder: (optional principal),
  highest-bid: uint,
  bid-count: uint,
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

(define-public (set-fee-bps (bps uint))
  (let ((old (var-get fee-bps)))
    (try! (assert-owner))
    (asserts! (<= bps MAX-FEE-BPS) ERR-INVALID-FEE)
    (var-set fee-bps bps)
    (print { event: "fee-updated", old-fee-bps: old, new-fee-bps: bps })
    (ok true)))

;; Fees paid to this contract itself could never leave it.
(define-public (set-treasury (new-treasury principal))
  (let ((old (var-get treasury)))
    (try! (assert-owner))
    (asserts! (not (is-eq new-treasury (as-contract tx-sender))) ERR-INVALID-TREASURY)
    (var-set treasury new-treasury)
    (print { event: "treasury-updated", old-treasury: old, new-treasury: new-treasury })
    (ok true)))

(define-public (set-currency (currency principal) (allowed bool))
  (begin
    (try! (assert-owner))
    (map-set currencies currency allowed)
    (print { event: "currency-updated", currency: currency, allowed: allowed })
    (ok true)))

;; ---------------------------------------------------------------- helpers

(define-private (currency-allowed (currency (optional principal)))
  (match currency c (default-to false (map-get? currencies c)) true))

(define-private (check-currency (currency (optional principal)) (ft (optional <ft-trait>)))
  (ok (asserts! (is-eq currency (match ft t (some (contract-of t)) none)) ERR-WRONG-CURRENCY)))

;; Zero amounts and payments to oneself are skipped: both would make the transfer primitive fail.
(define-private (pay-from-sender (ft (optional <ft-trait>)) (amount uint) (recipient principal))
  (if (or (is-eq amount u0) (is-eq tx-sender recipient))
    (ok true)
    (match ft token
      (begin (unwrap! (contract-call? token transfer amount tx-sender recipient none) ERR-PAYMENT-FAILED) (ok true))
      (begin (unwrap! (stx-transfer? amount tx-sender recipient) ERR-PAYMENT-FAILED) (ok true)))))

(define-private (pay-from-escrow (ft (optional <ft-trait>)) (amount uint) (recipient principal))
  (if (is-eq amount u0)
    (ok true)
    (match ft token
      (begin (unwrap! (as-contract (contract-call? token transfer amount tx-sender recipient none)) ERR-PAYMENT-FAILED) (ok true))
      (begin (unwrap! (as-contract (stx-transfer? amount tx-sender recipient)) ERR-PAYMENT-FAILED) (ok true)))))

(define-private (release (token-id uint) (recipient principal))
  (as-contract (contract-call? .rec-nft transfer token-id tx-sender recipient)))

(define-private (is-revoked (token-id uint))
  (is-eq (contract-call? .rec-nft get-status token-id) (some "revoked")))

(define-private (fee-of (price uint))
  (/ (* price (var-get fee-bps)) BPS-DENOMINATOR))

(define-private (sale-event (listing-id uint) (listing { kind: (string-ascii 12), token-id: uint, seller: principal, currency: (optional principal), price: uint, reserve-price: uint, min-increment: uint, start-height: uint, end-height: uint, status: (string-ascii 10), highest-bidder: (optional principal), highest-bid: uint, bid-count: uint }) (buyer principal) (price uint) (fee uint) (retired bool))
  (print { event: "sale", listing-id: listing-id, token-id: (get token-id listing),
           kind: (get kind listing), seller: (get seller listing), buyer: buyer,
           currency: (get currency listing), price: price, fee: fee,
           seller-proceeds: (- price fee), treasury: (var-get treasury),
           fee-bps: (var-get fee-bps), retired: retired, status: "sold" }))

;; ---------------------------------------------------------------- listing

(define-private (create-listing
    (kind (string-ascii 12)) (token-id uint) (currency (optional principal)) (price uint)
    (reserve-price uint) (min-increment uint) (end-height uint))
  (let ((listing-id (+ (var-get last-listing-id) u1))
        (listing {
          kind: kind, token-id: token-id, seller: tx-sender, currency: currency, price: price,
          reserve-price: reserve-price, min-increment: min-increment,
          start-height: stacks-block-height, end-height: end-height, status: "active",
          highest-bidder: none, highest-bid: u0, bid-count: u0 }))
    (try! (assert-not-paused))
    (asserts! (currency-allowed currency) ERR-CURRENCY-NOT-ALLOWED)
    (asserts! (> price u0) ERR-INVALID-PRICE)
    (asserts! (> end-height stacks-block-height) ERR-INVALID-END-HEIGHT)
    (try! (contract-call? .rec-nft transfer token-id tx-sender (as-contract tx-sender)))
    (map-set listings listing-id listing)
    (var-set last-listing-id listing-id)
    (print (merge { event: "listing-created", listing-id: listing-id } listing))
    (ok listing-id)))

(define-public (list-fixed (token-id uint) (currency (optional principal)) (price uint) (end-height uint))
  (create-listing "fixed-price" token-id currency price u0 u0 end-height))

(define-public (create-auction
    (token-id uint) (currency (optional principal)) (start-price uint) (reserve-price uint)
    (min-increment uint) (end-height uint))
  (begin
    (asserts! (>= reserve-price start-price) ERR-INVALID-PRICE)
    (asserts! (> min-increment u0) ERR-INVALID-INCREMENT)
    (create-listing "auction" token-id currency start-price reserve-price min-increment end-height)))

(define-public (update-price (listing-id uint) (new-price uint))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND)))
    (try! (assert-not-paused))
    (asserts! (is-eq tx-sender (get seller listing)) ERR-NOT-SELLER)
    (asserts! (is-eq (get kind listing) "fixed-price") ERR-WRONG-KIND)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (< stacks-block-height (get end-height listing)) ERR-LISTING-ENDED)
    (asserts! (> new-price u0) ERR-INVALID-PRICE)
    (map-set listings listing-id (merge listing { price: new-price }))
    (print { event: "listing-price-updated", listing-id: listing-id, token-id: (get token-id listing),
             seller: tx-sender, old-price: (get price listing), new-price: new-price,
             currency: (get currency listing) })
    (ok true)))

;; Not blocked by the pause: the seller must always be able to take the token back.
(define-public (cancel-listing (listing-id uint))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND)))
    (asserts! (is-eq tx-sender (get seller listing)) ERR-NOT-SELLER)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (is-none (get highest-bidder listing)) ERR-HAS-BIDS)
    (try! (release (get token-id listing) (get seller listing)))
    (map-set listings listing-id (merge listing { status: "cancelled" }))
    (print { event: "listing-cancelled", listing-id: listing-id, token-id: (get token-id listing),
             seller: (get seller listing), kind: (get kind listing), status: "cancelled" })
    (ok true)))

(define-public (expire-listing (listing-id uint))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND)))
    (asserts! (is-eq (get kind listing) "fixed-price") ERR-WRONG-KIND)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (>= stacks-block-height (get end-height listing)) ERR-LISTING-NOT-ENDED)
    (try! (release (get token-id listing) (get seller listing)))
    (map-set listings listing-id (merge listing { status: "expired" }))
    (print { event: "listing-expired", listing-id: listing-id, token-id: (get token-id listing),
             seller: (get seller listing), kind: (get kind listing), status: "expired",
             refunded-bidder: none, refunded-amount: u0 })
    (ok true)))

;; ---------------------------------------------------------------- fixed-price sales

(define-private (buy-listing (listing-id uint) (ft (optional <ft-trait>)) (retired bool))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND))
        (token-id (get token-id listing))
        (price (get price listing))
        (fee (fee-of price))
        (buyer tx-sender))
    (try! (assert-not-paused))
    (asserts! (is-eq (get kind listing) "fixed-price") ERR-WRONG-KIND)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (< stacks-block-height (get end-height listing)) ERR-LISTING-ENDED)
    (asserts! (not (is-eq buyer (get seller listing))) ERR-SELLER-CANNOT-BUY)
    (asserts! (not (is-revoked token-id)) ERR-CERTIFICATE-REVOKED)
    (try! (check-currency (get currency listing) ft))
    (try! (pay-from-sender ft fee (var-get treasury)))
    (try! (pay-from-sender ft (- price fee) (get seller listing)))
    (try! (release token-id buyer))
    (map-set listings listing-id (merge listing { status: "sold" }))
    (sale-event listing-id listing buyer price fee retired)
    (ok token-id)))

(define-public (buy (listing-id uint) (ft (optional <ft-trait>)))
  (buy-listing listing-id ft false))

(define-public (buy-and-retire
    (listing-id uint)
    (ft (optional <ft-trait>))
    (beneficiary-name (string-utf8 128))
    (beneficiary (optional principal))
    (consumption-country (string-ascii 2))
    (consumption-subdivision (string-ascii 6))
    (consumption-market-boundary (string-ascii 32))
    (claim-period-start uint)
    (claim-period-end uint)
    (reporting-year uint)
    (purpose (string-ascii 32)))
  (let ((token-id (try! (buy-listing listing-id ft true))))
    (try! (contract-call? .rec-nft retire token-id beneficiary-name beneficiary consumption-country
            consumption-subdivision consumption-market-boundary claim-period-start claim-period-end
            reporting-year purpose))
    (ok token-id)))

;; ---------------------------------------------------------------- auctions

(define-public (place-bid (listing-id uint) (amount uint) (ft (optional <ft-trait>)))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND))
        (previous-bidder (get highest-bidder listing))
        (previous-amount (get highest-bid listing))
        (bid-count (+ (get bid-count listing) u1)))
    (try! (assert-not-paused))
    (asserts! (is-eq (get kind listing) "auction") ERR-WRONG-KIND)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (< stacks-block-height (get end-height listing)) ERR-LISTING-ENDED)
    (asserts! (not (is-eq tx-sender (get seller listing))) ERR-SELLER-CANNOT-BUY)
    (asserts! (not (is-revoked (get token-id listing))) ERR-CERTIFICATE-REVOKED)
    (try! (check-currency (get currency listing) ft))
    (asserts! (if (is-some previous-bidder)
                (>= amount (+ previous-amount (get min-increment listing)))
                (>= amount (get price listing))) ERR-BID-TOO-LOW)
    (try! (pay-from-sender ft amount (as-contract tx-sender)))
    (match previous-bidder bidder (try! (pay-from-escrow ft previous-amount bidder)) true)
    (map-set listings listing-id (merge listing {
      highest-bidder: (some tx-sender), highest-bid: amount, bid-count: bid-count }))
    (print { event: "bid-placed", listing-id: listing-id, token-id: (get token-id listing),
             bidder: tx-sender, amount: amount, currency: (get currency listing),
             bid-count: bid-count, refunded-bidder: previous-bidder,
             refunded-amount: (if (is-some previous-bidder) previous-amount u0) })
    (ok true)))

;; Anyone may settle after the end; not blocked by the pause so no bid or token is ever trapped.
(define-public (settle-auction (listing-id uint) (ft (optional <ft-trait>)))
  (let ((listing (unwrap! (map-get? listings listing-id) ERR-LISTING-NOT-FOUND))
        (token-id (get token-id listing))
        (seller (get seller listing))
        (amount (get highest-bid listing))
        (sold (and (is-some (get highest-bidder listing))
                   (>= amount (get reserve-price listing))
                   (not (is-revoked token-id)))))
    (asserts! (is-eq (get kind listing) "auction") ERR-WRONG-KIND)
    (asserts! (is-eq (get status listing) "active") ERR-LISTING-NOT-ACTIVE)
    (asserts! (>= stacks-block-height (get end-height listing)) ERR-LISTING-NOT-ENDED)
    (try! (check-currency (get currency listing) ft))
    (if sold
      (let ((winner (unwrap-panic (get highest-bidder listing)))
            (fee (fee-of amount)))
        (try! (pay-from-escrow ft fee (var-get treasury)))
        (try! (pay-from-escrow ft (- amount fee) seller))
        (try! (release token-id winner))
        (map-set listings listing-id (merge listing { status: "sold" }))
        (sale-event listing-id listing winner amount fee false)
        (ok true))
      (begin
        (match (get highest-bidder listing) bidder (try! (pay-from-escrow ft amount bidder)) true)
        (try! (release token-id seller))
        (map-set listings listing-id (merge listing { status: "expired" }))
        (print { event: "listing-expired", listing-id: listing-id, token-id: token-id,
                 seller: seller, kind: "auction", status: "expired",
                 refunded-bidder: (get highest-bidder listing),
                 refunded-amount: (if (is-some (get highest-bidder listing)) amount u0) })
        (ok true)))))

;; ---------------------------------------------------------------- read-only

(define-read-only (get-listing (listing-id uint)) (map-get? listings listing-id))
(define-read-only (get-last-listing-id) (var-get last-listing-id))
(define-read-only (get-fee-bps) (var-get fee-bps))
(define-read-only (get-treasury) (var-get treasury))
(define-read-only (is-currency-allowed (currency (optional principal))) (currency-allowed currency))
(define-read-only (get-contract-owner) (var-get contract-owner))
(define-read-only (get-pending-owner) (var-get pending-owner))
(define-read-only (is-paused) (var-get paused))
(define-read-only (quote-fee (price uint)) { fee: (fee-of price), seller-proceeds: (- price (fee-of price)) })
